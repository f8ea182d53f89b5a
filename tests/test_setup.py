"""The set-up is what the README promises: one dependency list, two commands, CI runs the test one."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import tomllib
import urllib.error
import urllib.request

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def test_lab_command_serves_the_course() -> None:
    port, token = _free_port(), "course-test"
    server = subprocess.Popen(
        [
            "make",
            "--no-print-directory",
            "lab",
            f"PORT={port}",
            f"LAB_ARGS=--no-browser --ServerApp.ip=127.0.0.1 --IdentityProvider.token={token}",
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while _get(f"{base}/api/status?token={token}") != 200:
            assert server.poll() is None, f"`make lab` exited with {server.returncode}"
            assert time.monotonic() < deadline, "JupyterLab did not answer within 120 s"
            time.sleep(1)
        assert _get(f"{base}/api/contents/notebooks?token={token}") == 200
        assert _get(f"{base}/lab/tree/notebooks/01_intuition.ipynb?token={token}") == 200
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_license_file_and_the_supported_pythons() -> None:
    """MIT, as pyproject says, in a LICENSE file; requires-python admits 3.11 to 3.13 and the classifiers agree."""
    from packaging.specifiers import SpecifierSet

    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "Copyright (c) 2026 attention_course contributors" in license_text
    assert PYPROJECT["project"]["license"] == {"text": "MIT"}
    supported = SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert [v for v in ("3.10", "3.11", "3.12", "3.13", "3.14") if v in supported] == ["3.11", "3.12", "3.13"]
    classifiers = PYPROJECT["project"]["classifiers"]
    assert [c.rsplit(" ", 1)[1] for c in classifiers if c.startswith("Programming Language :: Python :: 3.")] == [
        "3.11",
        "3.12",
        "3.13",
    ]
