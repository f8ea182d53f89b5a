"""Render the course to static HTML that reads offline: ``python -m attention_course.teaching.html_build build/html``.

Lessons (``notebooks/``), exercises and solutions become one page each, with the outputs they were
committed with, plus an ``index.html`` that lists them in course order. Nothing on a page loads from
the network:

- widgets become what they showed when the notebook was executed (the outputs of their ``Output``
  widgets, and a line with each control's value), since without a kernel nothing can move them;
- math is typeset by a local copy of MathJax when the ``jupyter-server-mathjax`` package is installed,
  and otherwise stays readable TeX source;
- require.js, the widget manager and mermaid, which nbconvert's "lab" template loads from CDNs, are left out;
- links between notebooks (``../exercises/04_softmax.ipynb``) point at the rendered pages.
"""

from __future__ import annotations

import argparse
import html
import importlib.util
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import jinja2
import nbformat
from nbconvert import HTMLExporter

FOLDERS = ("notebooks", "exercises", "solutions")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
MATHJAX_DIR = "_static/mathjax"

# nbconvert's "lab" template minus everything it would fetch from a CDN, plus a navigation bar.
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{% block html_head_js_requirejs %}{% endblock %}
{% block jupyter_widgets %}{% endblock %}
{% block html_head_js_mermaidjs %}{% endblock %}
{% block html_head_js_mathjax %}{{ resources.course_math | safe }}{% endblock %}
{% block extra_css %}<style>
nav.course { font-family: var(--jp-ui-font-family); padding: 8px 16px; border-bottom: 1px solid #ddd;
             display: flex; gap: 1.5em; }
.course-widget-note { font-style: italic; color: #555; }
</style>{% endblock %}
{% block body_header %}{{ super() }}<nav class="course">{{ resources.course_nav | safe }}</nav>{% endblock %}
"""

# MathJax 2 from the local copy; jupyter-server-mathjax ships only the STIX-Web fonts, so ask for those.
_MATHJAX = """<script type="text/x-mathjax-config">
MathJax.Hub.Config({
  tex2jax: {inlineMath: [['$', '$'], ['\\\\(', '\\\\)']], displayMath: [['$$', '$$'], ['\\\\[', '\\\\]']],
            processEscapes: true, processEnvironments: true},
  "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null},
  displayAlign: "center", messageStyle: "none"
});
</script>
<script src="{prefix}/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"></script>"""


def _math(mathjax: Path | None, up: str) -> str:
    """The ``<head>`` lines that typeset math on a page ``up`` (``"../"``) below the site root; empty without MathJax."""
    return _MATHJAX.replace("{prefix}", up + MATHJAX_DIR) if mathjax is not None else ""


def mathjax_source() -> Path | None:
    """The folder of a locally installed MathJax 2 (from ``jupyter-server-mathjax``), or None."""
    spec = importlib.util.find_spec("jupyter_server_mathjax")
    if spec is None or spec.origin is None:
        return None
    static = Path(spec.origin).parent / "static"
    return static if (static / "MathJax.js").exists() else None


def find_notebooks(root: Path) -> list[Path]:
    """The ``.ipynb`` files of ``root``'s lesson, exercise and solution folders, in course order, relative to root."""
    return [path.relative_to(root) for folder in FOLDERS for path in sorted((root / folder).glob("*.ipynb"))]


def notebook_title(nb: nbformat.NotebookNode, fallback: str) -> str:
    """The text of the notebook's first ``# `` heading, or ``fallback``."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def _widget_outputs(model_id: str, models: dict, controls: list[str]) -> list[dict]:
    """Outputs a widget showed when saved: its Output widgets' outputs, HTML/Label values; controls go to ``controls``."""
    model = models.get(model_id)
    if model is None:
        return []
    name, state = model.get("model_name", ""), model.get("state", {})
    if name == "OutputModel":
        return list(state.get("outputs", []))
    if name in ("HTMLModel", "HTMLMathModel", "LabelModel"):
        value = state.get("value", "")
        text = value if name != "LabelModel" else html.escape(value)
        return [{"output_type": "display_data", "metadata": {}, "data": {"text/html": text}}] if value else []
    if "description" in state and ("value" in state or "index" in state):
        controls.append(_describe_control(name, state))
    outputs = []
    for child in state.get("children", []):
        outputs += _widget_outputs(child.removeprefix("IPY_MODEL_"), models, controls)
    return outputs


def _describe_control(name: str, state: dict) -> str:
    """One line for a saved control: ``"d_k = 64 (one of 11 choices)"``, ``"T = 1.0 (from 0.03 to 31.6)"``."""
    label = state["description"] or name.removesuffix("Model")
    labels, index = state.get("_options_labels"), state.get("index")
    if labels is not None:
        value = labels[index] if isinstance(index, int) else ", ".join(labels[i] for i in index or ())
        return f"{label} = {value} (one of {len(labels)} choices)"
    if "min" in state and "max" in state:
        low, high = state["min"], state["max"]
        if "base" in state:  # a log slider's bounds are exponents
            low, high = f"{state['base'] ** low:.3g}", f"{state['base'] ** high:.3g}"
        return f"{label} = {state['value']} (from {low} to {high})"
    return f"{label} = {state['value']}"


def static_widgets(nb: nbformat.NotebookNode) -> int:
    """Replace every widget view in ``nb`` (in place) by what it showed when saved; drop the widget state.

    Returns:
        how many widget views were replaced.
    """
    models = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    replaced = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.outputs:
            view = output.get("data", {}).get(WIDGET_VIEW)
            if view is None:
                outputs.append(output)
                continue
            replaced += 1
            controls: list[str] = []
            shown = _widget_outputs(view["model_id"], models, controls)
            note = (
                "Interactive in JupyterLab"
                + (": " + "; ".join(controls) if controls else "")
                + (". Shown here as it was saved." if shown else ". Run the notebook to use it.")
            )
            outputs.append(
                nbformat.from_dict(
                    {
                        "output_type": "display_data",
                        "metadata": {},
                        "data": {
                            "text/html": f'<p class="course-widget-note">{html.escape(note)}</p>',
                            "text/plain": note,
                        },
                    }
                )
            )
            outputs += [nbformat.from_dict(shown_output) for shown_output in shown]
        cell.outputs = outputs
    return replaced


_IPYNB_LINK = re.compile(r'href="(?![a-z]+:|#)([^"#]+)\.ipynb(#[^"]*)?"')


def _link_pages(page: str, source: Path, rendered: set[Path], broken: list[str]) -> str:
    """Point ``href="x.ipynb"`` links at the rendered ``x.html``; note links to notebooks that do not exist."""

    def replace(match: re.Match[str]) -> str:
        target = source.parent / f"{match.group(1)}.ipynb"
        if Path(*_normalise(target.parts)) not in rendered:
            broken.append(f"{source}: link to {match.group(1)}.ipynb, which is not in the course")
            return match.group(0)
        return f'href="{match.group(1)}.html{match.group(2) or ""}"'

    return _IPYNB_LINK.sub(replace, page)


def _normalise(parts: Sequence[str]) -> list[str]:
    """Resolve ``..`` in relative path parts without touching the file system."""
    out: list[str] = []
    for part in parts:
        if part == "..":
            if out:
                out.pop()
        elif part != ".":
            out.append(part)
    return out


def _nav(source: Path, lessons: list[Path]) -> str:
    """The navigation bar of ``source``'s page: the index, and the previous/next lesson for lessons."""
    up = "../" * (len(source.parts) - 1)
    links = [f'<a href="{up}index.html">All lessons</a>']
    if source in lessons:
        at = lessons.index(source)
        if at > 0:
            links.append(f'<a href="{lessons[at - 1].stem}.html">&larr; {lessons[at - 1].stem}</a>')
        if at + 1 < len(lessons):
            links.append(f'<a href="{lessons[at + 1].stem}.html">{lessons[at + 1].stem} &rarr;</a>')
    return " ".join(links)


def _index(titles: dict[Path, str], math_note: str, math: str) -> str:
    """The index page: one row per lesson, with its exercise and solution when they exist."""
    rows = []
    for lesson in (p for p in titles if p.parts[0] == "notebooks"):
        cells = [f'<a href="{lesson.with_suffix(".html").as_posix()}">{html.escape(titles[lesson])}</a>']
        for folder in ("exercises", "solutions"):
            twin = Path(folder, lesson.name)
            cells.append(
                f'<a href="{twin.with_suffix(".html").as_posix()}">{folder[:-1]}</a>' if twin in titles else ""
            )
        rows.append("<tr><td>" + "</td><td>".join(cells) + "</td></tr>")
    extra = [p for p in titles if p.parts[0] != "notebooks" and Path("notebooks", p.name) not in titles]
    extra_list = "".join(
        f'<li><a href="{p.with_suffix(".html").as_posix()}">{html.escape(titles[p])}</a> '
        f"({html.escape(p.as_posix())})</li>"
        for p in extra
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Attention, from first principles</title>
<style>body {{ font-family: system-ui, sans-serif; max-width: 52em; margin: 2em auto; padding: 0 1em; }}
td {{ padding: 4px 12px; }} tr:nth-child(even) {{ background: #f4f4f4; }}</style>{math}</head>
<body><h1>Attention, from first principles</h1>
<p>The lessons as they were last run, to read without Jupyter. To run them, move the sliders and do the
exercises, open the course in JupyterLab (<code>make lab</code>, see the README). {math_note}</p>
<table><tr><th>lesson</th><th colspan="2">your turn</th></tr>{"".join(rows)}</table>
{f"<h2>Other notebooks</h2><ul>{extra_list}</ul>" if extra else ""}
</body></html>
"""


def build(root: Path, out: Path) -> list[Path]:
    """Render every course notebook under ``root`` into ``out`` (same folder layout) plus ``out/index.html``.

    Args:
        root: the repository (holds notebooks/, exercises/, solutions/).
        out: the output folder (created; pages in it are overwritten).

    Returns:
        the pages written, index first.

    Raises:
        FileNotFoundError: when ``root`` holds no notebook.
    """
    sources = find_notebooks(root)
    if not sources:
        raise FileNotFoundError(f"no notebooks under {root}/{{{','.join(FOLDERS)}}}")
    mathjax = mathjax_source()
    if mathjax is not None:
        shutil.copytree(mathjax, out / MATHJAX_DIR, dirs_exist_ok=True)
        math_note = "Math is typeset by a copy of MathJax that comes with these pages."
    else:
        print("note: jupyter-server-mathjax is not installed; math stays as TeX source", file=sys.stderr)
        math_note = "Math shows as TeX source (install jupyter-server-mathjax and rebuild to typeset it)."
    exporter = HTMLExporter(template_name="lab", extra_loaders=[jinja2.DictLoader({"course.html.j2": _TEMPLATE})])
    exporter.template_file = "course.html.j2"
    lessons = [p for p in sources if p.parts[0] == "notebooks"]
    rendered = set(sources)
    titles: dict[Path, str] = {}
    broken: list[str] = []
    written = []
    for source in sources:
        nb = nbformat.read(root / source, as_version=4)
        titles[source] = notebook_title(nb, source.stem)
        static_widgets(nb)
        up = "../" * (len(source.parts) - 1)
        resources = {
            "metadata": {"name": titles[source]},
            "course_nav": _nav(source, lessons),
            "course_math": _math(mathjax, up),
        }
        page, _ = exporter.from_notebook_node(nb, resources=resources)
        target = out / source.with_suffix(".html")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_link_pages(page, source, rendered, broken), encoding="utf-8")
        written.append(target)
    for folder in FOLDERS:  # pictures the markdown shows (a widget's static picture: ![...](figures/x.png))
        if (root / folder / "figures").is_dir():
            shutil.copytree(root / folder / "figures", out / folder / "figures", dirs_exist_ok=True)
    for line in broken:
        print(f"warning: {line}", file=sys.stderr)
    index = out / "index.html"
    index.write_text(_index(titles, math_note, _math(mathjax, "")), encoding="utf-8")
    return [index, *written]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m attention_course.teaching.html_build OUT [--root ROOT]``: build the static site and say where it is."""
    parser = argparse.ArgumentParser(
        prog="python -m attention_course.teaching.html_build", description=__doc__.splitlines()[0]
    )
    parser.add_argument("out", type=Path, help="output folder, e.g. build/html")
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository (default: .)")
    args = parser.parse_args(argv)
    try:
        pages = build(args.root, args.out)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(pages)} pages; open {pages[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
