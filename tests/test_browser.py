"""Every lesson and solution notebook, run in a real JupyterLab in headless Chromium, as a learner sees it.

nbval proves the kernel side; this proves the page: after "Run All" no cell shows a traceback, no widget
fails to render, every widget the saved notebook had renders, and moving each slider and drop-down of
a widget changes what the outputs show. A screenshot per notebook lands in build/screenshots/.

Needs Debian's /usr/bin/chromium (``make test`` installs it when run as root) and Playwright for Python
(never its downloaded browsers). Without them the tests skip, unless CI=true, where they fail.
Environment: BROWSER_PAGES (notebooks run at once, default 3), BROWSER_TIMEOUT (seconds per wait, default 300).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = [
    p.relative_to(REPO).as_posix()
    for folder in ("notebooks", "solutions")
    for p in sorted((REPO / folder).glob("*.ipynb"))
]
SCREENSHOTS = REPO / "build" / "screenshots"
SELFTEST_DIR = "_browser_selftest"
PAGES = int(os.environ.get("BROWSER_PAGES", "3"))
TIMEOUT = float(os.environ.get("BROWSER_TIMEOUT", "300"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

try:
    import browser_helpers
except ImportError as error:  # Playwright is in the test extra; say so rather than erroring at collection
    browser_helpers = None
    IMPORT_ERROR = f"playwright is not importable ({error}); run `make test`, which installs '.[all,test]'"


def _selftest_notebooks() -> dict[str, nbformat.NotebookNode]:
    """Small notebooks that prove the browser check itself: one that must pass, two that must fail."""
    v4 = nbformat.v4
    slider = (
        "import ipywidgets as widgets\n"
        "widgets.interact(lambda n=3: print('n squared is', n * n), n=widgets.IntSlider(value=3, min=0, max=10))"
    )
    dropdown = (
        "widgets.interact(lambda word='tiger': print(word.upper()), word=widgets.Dropdown(options=['tiger', 'it']))"
    )
    allowed_error = v4.new_code_cell("raise ValueError('shown on purpose')", metadata={"tags": ["raises-exception"]})
    missing_model = {
        WIDGET_VIEW: {"model_id": "0" * 32, "version_major": 2, "version_minor": 0},
        "text/plain": "a widget",
    }
    # A widget whose front-end code is not installed (as when a widget package's lab extension is missing).
    unknown_widget_class = (
        "import ipywidgets as widgets\nfrom traitlets import Unicode\n\n"
        "class NotInstalled(widgets.DOMWidget):\n"
        "    _model_module = _view_module = Unicode('no-such-widget-package').tag(sync=True)\n"
        "    _model_name, _view_name = Unicode('NoModel').tag(sync=True), Unicode('NoView').tag(sync=True)\n\n"
        "NotInstalled()"
    )
    kernel = {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}}
    return {
        "passes_with_controls": v4.new_notebook(
            cells=[allowed_error, v4.new_code_cell(slider), v4.new_code_cell(dropdown)], metadata=kernel
        ),
        "fails_cell_raises": v4.new_notebook(
            cells=[
                v4.new_code_cell("print('fine')"),
                v4.new_code_cell("1 / 0"),
                v4.new_code_cell("print('never runs')"),
            ],
            metadata=kernel,
        ),
        "fails_widget_cannot_render": v4.new_notebook(
            cells=[
                v4.new_code_cell(unknown_widget_class),
                v4.new_code_cell(f"from IPython.display import display\ndisplay({missing_model!r}, raw=True)"),
            ],
            metadata=kernel,
        ),
    }


SELFTESTS = {name: f"{SELFTEST_DIR}/{name}.ipynb" for name in _selftest_notebooks()}


def _require_browser() -> None:
    """Skip (fail when CI=true) without Chromium or Playwright, with the reason."""
    reasons = []
    if browser_helpers is None:
        reasons.append(IMPORT_ERROR)
    elif not browser_helpers.CHROMIUM.exists():
        reasons.append(f"{browser_helpers.CHROMIUM} is missing: install Debian's chromium (`apt-get install chromium`)")
    if not reasons:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("CI=true but the browser test cannot run: " + "; ".join(reasons), pytrace=False)
    pytest.skip("; ".join(reasons))


def _selected(session: pytest.Session, module: object) -> list[str]:
    """The notebooks of this module's selected tests, in run order (so they can all start at once)."""
    chosen = []
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if getattr(item, "module", None) is module and params:
            chosen.append(params.get("notebook") or SELFTESTS[params["selftest"]])
    return chosen


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Start JupyterLab on a copy of the repository and Chromium; queue every selected notebook; map path -> Future."""
    _require_browser()
    root = tmp_path_factory.mktemp("lab_root")
    shutil.copytree(
        REPO, root, dirs_exist_ok=True, symlinks=True, ignore=shutil.ignore_patterns(*browser_helpers.COPY_IGNORE)
    )
    (root / SELFTEST_DIR).mkdir()
    for name, notebook in _selftest_notebooks().items():
        nbformat.write(notebook, root / SELFTESTS[name])
    lab = browser_helpers.JupyterLab(root, tmp_path_factory.mktemp("lab_state"))
    lab.start()
    browser = browser_helpers.LabBrowser(lab, SCREENSHOTS, pages=PAGES, timeout=TIMEOUT)
    try:
        browser.start()
        futures = {notebook: browser.submit(notebook) for notebook in _selected(request.session, request.module)}
        yield futures
    finally:
        browser.close()
        lab.stop()
    finished = {nb: f.result() for nb, f in futures.items() if f.done() and not f.cancelled() and not f.exception()}
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / "runs.json").write_text(
        json.dumps(
            {
                nb: {
                    "seconds": {k: round(v, 1) for k, v in run.seconds.items()},
                    "controls_moved": run.controls_moved,
                    "widget_cells": run.widget_cells,
                    "problems": run.problems,
                }
                for nb, run in finished.items()
            },
            indent=1,
        ),
        encoding="utf-8",
    )


def _result(runs: dict, notebook: str):
    """Wait for ``notebook``'s run (bounded: every wait inside a run has its own timeout)."""
    return runs[notebook].result(timeout=TIMEOUT * 4 * len(runs))


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_runs_cleanly_in_jupyterlab(runs: dict, notebook: str) -> None:
    run = _result(runs, notebook)
    assert not run.problems, f"{notebook} in JupyterLab ({run.screenshot}):\n" + "\n".join(run.problems)
    assert run.code_cells > 0


@pytest.mark.parametrize("selftest", sorted(SELFTESTS))
def test_browser_check_catches_what_it_should(runs: dict, selftest: str) -> None:
    """It passes working controls and an allowed error, and fails on a cell that raises or a widget that cannot render."""
    run = _result(runs, SELFTESTS[selftest])
    problems = "\n".join(run.problems)
    if selftest == "passes_with_controls":
        assert not run.problems, problems
        assert (run.widget_cells, run.controls_moved) == (2, 2)
    elif selftest == "fails_cell_raises":
        assert len(run.problems) == 1 and "cell 1 shows an error" in problems and "ZeroDivisionError" in problems
    else:
        assert len(run.problems) == 2, problems
        assert "cell 0: a widget failed to render" in problems and "no-such-widget-package" in problems
        # ipywidgets waits a while for a model, then gives up with "Error displaying widget: model not found".
        assert "cell 1: Error displaying widget" in problems or "cell 1: a widget never rendered" in problems
