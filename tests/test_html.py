"""The static HTML build (``make html``): every notebook renders, links work, and no page needs the network."""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest

from attention_course.teaching import html_build as course_html

REPO = Path(__file__).resolve().parent.parent
V4 = nbformat.v4
KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}}
# Anything a page loads by itself: scripts, stylesheets, images, frames, fonts and CSS url(...).
PNG = b"\x89PNG\r\n\x1a\n a stand-in for a picture"
IMAGE = re.compile(r'<img\b[^>]*?\bsrc="(?!data:)([^"]+)"')
RESOURCE = re.compile(
    r'<(?:script|link|img|iframe|source|embed)\b[^>]*?\b(?:src|href)="([^"]*)"|url\(\s*[\'"]?([^\'")]+)'
)


def _widget_notebook() -> nbformat.NotebookNode:
    """A notebook whose one output is an ``interact`` (log slider + Output widget) saved with its state."""
    state = {
        "box": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_slider", "IPY_MODEL_out"]}},
        "slider": {
            "model_name": "FloatLogSliderModel",
            "state": {"description": "T", "value": 1.0, "min": -1.5, "max": 1.5, "base": 10.0},
        },
        "out": {
            "model_name": "OutputModel",
            "state": {"outputs": [{"output_type": "stream", "name": "stdout", "text": "weights [0.09 0.24 0.67]\n"}]},
        },
    }
    view = {"model_id": "box", "version_major": 2, "version_minor": 0}
    cells = [
        V4.new_code_cell(
            "interact(...)",
            outputs=[
                V4.new_output(
                    "display_data",
                    data={"application/vnd.jupyter.widget-view+json": view, "text/plain": "interactive(...)"},
                )
            ],
        ),
        V4.new_code_cell(
            "Dropdown(...)",
            outputs=[
                V4.new_output(
                    "display_data",
                    data={
                        "application/vnd.jupyter.widget-view+json": {**view, "model_id": "gone"},
                        "text/plain": "Dropdown()",
                    },
                )
            ],
        ),
    ]
    return V4.new_notebook(
        cells=cells, metadata={**KERNEL, "widgets": {"application/vnd.jupyter.widget-state+json": {"state": state}}}
    )


def test_widgets_become_what_they_showed_when_saved() -> None:
    nb = _widget_notebook()
    assert course_html.static_widgets(nb) == 2
    assert "widgets" not in nb.metadata
    first, second = (cell.outputs for cell in nb.cells)
    assert all("application/vnd.jupyter.widget-view+json" not in o.get("data", {}) for o in first + second)
    # The log slider's bounds are 10**-1.5 and 10**1.5, the Output widget's text comes along.
    assert (
        first[0].data["text/plain"]
        == "Interactive in JupyterLab: T = 1.0 (from 0.0316 to 31.6). Shown here as it was saved."
    )
    assert first[1].text == "weights [0.09 0.24 0.67]\n"
    assert second[0].data["text/plain"] == "Interactive in JupyterLab. Run the notebook to use it."


def _mini_course(root: Path) -> None:
    """Two lessons, one exercise, one solution; lesson 01 links to its exercise, lesson 02 and a missing 03."""
    lesson = V4.new_notebook(
        metadata=KERNEL,
        cells=[
            V4.new_markdown_cell(
                "# 01 · First lesson\n\nThe scores are $QK^\\top / \\sqrt{d_k}$.\n\n"
                "[Your turn](../exercises/01_first.ipynb), [next](02_second.ipynb#top), "
                "[later](03_missing.ipynb), [docs](https://pytorch.org)\n\n"
                "![the widget, as saved](figures/01_widget.png)"
            ),
            V4.new_code_cell("print(1)", outputs=[V4.new_output("stream", name="stdout", text="1\n")]),
        ],
    )
    for path, nb in {
        "notebooks/01_first.ipynb": lesson,
        "notebooks/02_second.ipynb": _widget_notebook(),
        "exercises/01_first.ipynb": V4.new_notebook(metadata=KERNEL, cells=[V4.new_markdown_cell("# Exercises 01")]),
        "solutions/01_first.ipynb": V4.new_notebook(metadata=KERNEL, cells=[V4.new_markdown_cell("# Solutions 01")]),
    }.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, root / path)
    (root / "notebooks/figures").mkdir()
    (root / "notebooks/figures/01_widget.png").write_bytes(PNG)


def _external_resources(page: str) -> list[str]:
    """The resources a page would load from anywhere but itself or a relative path."""
    found = [a or b for a, b in RESOURCE.findall(page)]
    return [url for url in found if re.match(r"[a-z][a-z0-9+.-]*:", url) and not url.startswith("data:")]


@pytest.mark.parametrize("with_mathjax", [True, False])
def test_build_links_pages_and_stays_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], with_mathjax: bool
) -> None:
    root, out = tmp_path / "repo", tmp_path / "html"
    _mini_course(root)
    fake_mathjax = tmp_path / "mathjax"
    (fake_mathjax / "config").mkdir(parents=True)
    (fake_mathjax / "MathJax.js").write_text("// MathJax", encoding="utf-8")
    monkeypatch.setattr(course_html, "mathjax_source", lambda: fake_mathjax if with_mathjax else None)

    pages = course_html.build(root, out)

    assert [p.relative_to(out).as_posix() for p in pages] == [
        "index.html",
        "notebooks/01_first.html",
        "notebooks/02_second.html",
        "exercises/01_first.html",
        "solutions/01_first.html",
    ]
    lesson = (out / "notebooks/01_first.html").read_text(encoding="utf-8")
    assert 'href="../exercises/01_first.html"' in lesson and 'href="02_second.html#top"' in lesson
    assert 'href="03_missing.ipynb"' in lesson and "link to 03_missing.ipynb" in capsys.readouterr().err
    assert '<a href="02_second.html">02_second →</a>' in lesson and '<a href="../index.html">' in lesson
    index = (out / "index.html").read_text(encoding="utf-8")
    assert '<a href="notebooks/01_first.html">01 · First lesson</a>' in index
    assert '<a href="exercises/01_first.html">exercise</a>' in index and '<a href="solutions/01_first.html">' in index
    assert "Interactive in JupyterLab: T = 1.0" in (out / "notebooks/02_second.html").read_text(encoding="utf-8")
    for page in pages:
        assert _external_resources(page.read_text(encoding="utf-8")) == [], page
    assert ('src="../_static/mathjax/MathJax.js?config=' in lesson) is with_mathjax
    assert (out / "_static/mathjax/MathJax.js").exists() is with_mathjax
    assert ("TeX source" in index) is not with_mathjax
    assert 'src="figures/01_widget.png"' in lesson  # a widget's static picture shows on the page
    assert (out / "notebooks/figures/01_widget.png").read_bytes() == PNG


def test_build_without_notebooks_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert course_html.main([str(tmp_path / "html"), "--root", str(tmp_path)]) == 2
    assert "no notebooks under" in capsys.readouterr().err


@pytest.fixture(scope="module")
def course_site(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The real course, rendered once (what ``make html`` writes to build/html)."""
    if not course_html.find_notebooks(REPO):
        pytest.skip("the course has no notebooks yet")
    return course_html.build(REPO, tmp_path_factory.mktemp("site"))


def test_the_course_renders_with_nothing_to_fetch(course_site: list[Path]) -> None:
    assert len(course_site) == 1 + len(course_html.find_notebooks(REPO))
    for page in course_site:
        text = page.read_text(encoding="utf-8")
        assert _external_resources(text) == [], page
        assert "application/vnd.jupyter.widget-view+json" not in text, page
        for source in IMAGE.findall(text):  # every picture a page shows (the widgets' static PNGs) came along
            assert (page.parent / source).is_file(), f"{page} shows {source}, which the build did not copy"


def test_the_course_reads_in_a_browser_with_the_network_cut(course_site: list[Path]) -> None:
    """Chromium opens the index and a lesson with every non-file request blocked; math is typeset when MathJax is local."""
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but /usr/bin/chromium is missing", pytrace=False)
        pytest.skip("/usr/bin/chromium is missing: install Debian's chromium")
    lesson = next(p for p in course_site if p.parent.name == "notebooks" and "$" in p.read_text(encoding="utf-8"))
    requested: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(chromium),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page()
        page.route(
            "**/*",
            lambda route: (
                requested.append(route.request.url),
                route.continue_() if route.request.url.startswith(("file:", "data:")) else route.abort(),
            ),
        )
        for target in (course_site[0], lesson):
            page.goto(target.as_uri())
            page.wait_for_load_state("load")
        if course_html.mathjax_source() is not None:  # typesetting runs after "load"; 60 s is ample on a busy CPU
            page.wait_for_function("() => document.querySelector('.MathJax, .MathJax_Display')", timeout=60_000)
        browser.close()
    assert [url for url in requested if not url.startswith(("file:", "data:"))] == []
