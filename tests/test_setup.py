"""The set-up is what the README promises: one dependency list, two commands, CI runs the test one."""

from __future__ import annotations

import re
import tomllib

import yaml
from grading_helpers import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_installs_the_package_and_nothing_else() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(re.split(r"[=<>]", d)[0] for d in conda) == ["pip", "python"]
    python = next(d for d in conda if d.startswith("python"))
    assert python.split("=")[1] == "3.11" and ">=3.11" in PYPROJECT["project"]["requires-python"]
    # The one list of dependencies is pyproject.toml: environment.yml installs the package with the
    # extras a learner needs, and no package of its own.
    assert pip == ["-e .[all]"]
    assert set(PYPROJECT["project"]["optional-dependencies"]["all"]) == {"attention_course[capstone,triton]"}


def test_torch_is_bounded_below_2_14() -> None:
    torch_spec = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch"))
    upper = re.search(r"<\s*([\d.]+)", torch_spec)
    assert upper and tuple(map(int, upper.group(1).split("."))) <= (2, 14), torch_spec


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.DOTALL)
    assert first_block, "the README must open with a code block holding the two commands"
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines() if line.split("#")[0].strip()]
    assert commands == ["make lab", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert [line for line in ci.splitlines() if line and not line.startswith(("#", "set ", "cd "))] == ["make test"]


def test_lab_command_adds_allow_root_only_for_root() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "--allow-root" in makefile and "id -u" in makefile
