"""Drive a real JupyterLab in headless Chromium: open a notebook, run all cells, read what a learner sees.

Used by ``tests/test_browser.py``. One JupyterLab server (loopback, random port, token, fresh
workspace/settings/runtime folders) serves a throw-away copy of the repository, so running
notebooks never rewrites the committed ones. One Chromium (Debian's ``/usr/bin/chromium``, never a
browser that Playwright downloads) with a fresh profile runs ``pages`` notebooks at a time, each in
its own browser context (tab, storage) and JupyterLab workspace, from an asyncio loop in a background thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import Browser, BrowserContext, Page, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError

CHROMIUM = Path("/usr/bin/chromium")
# Headless comes from ``headless=True``; the rest keep Chromium off the network and its first-run chores.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STDERR_MIME = "application/vnd.jupyter.stderr"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# Settings a learner could also choose; none changes how a notebook renders. Autosave off keeps the copy
# unchanged; news and update checks would reach the network and pop a toast over the notebook.
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}
COPY_IGNORE = (
    ".git",
    ".venv",
    "build",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "*.egg-info",
    ".ipynb_checkpoints",
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class JupyterLab:
    """A JupyterLab server on loopback, started from ``python`` with everything it writes under ``state_dir``.

    Args:
        root: the folder it serves (notebook paths are relative to it).
        state_dir: an empty folder for its workspaces, settings, runtime files and log.
        python: the interpreter whose environment holds jupyterlab and the kernel.
    """

    def __init__(self, root: Path, state_dir: Path, python: str = sys.executable) -> None:
        self.root = root
        self.state_dir = state_dir
        self.python = python
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = state_dir / "jupyterlab.log"
        self.pid: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> None:
        """Start the server and wait until its REST API answers; raise ``RuntimeError`` with its log if it does not."""
        settings_dir = self.state_dir / "settings"
        for plugin, values in LAB_SETTINGS.items():
            path = settings_dir / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values), encoding="utf-8")
        env = dict(
            os.environ,
            JUPYTER_RUNTIME_DIR=str(self.state_dir / "runtime"),
            JUPYTER_DATA_DIR=str(self.state_dir / "data"),
            JUPYTER_CONFIG_DIR=str(self.state_dir / "config"),
            IPYTHONDIR=str(self.state_dir / "ipython"),
        )
        command = [
            self.python,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            f"--LabApp.workspaces_dir={self.state_dir / 'workspaces'}",
            f"--LabApp.user_settings_dir={settings_dir}",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        if os.geteuid() == 0:
            command.append("--allow-root")
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=self.root
            )
        self.pid = self._process.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self._process.returncode}:\n{self.log_tail()}")
            try:
                self.api("GET", "/api/status")
                return
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"JupyterLab did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def api(self, method: str, path: str) -> object:
        """Call the server's REST API (``path`` like ``/api/sessions``); return the decoded JSON, or None."""
        request = urllib.request.Request(
            self.base_url + path, method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def url(self, notebook: str, workspace: str) -> str:
        """The address that opens ``notebook`` (relative to root) in a fresh JupyterLab workspace."""
        return f"{self.base_url}/lab/workspaces/{workspace}/tree/{notebook}?reset&token={self.token}"

    def shut_down_kernel(self, notebook: str) -> None:
        """End the kernel sessions of ``notebook`` (relative to root), freeing its memory."""
        sessions = self.api("GET", "/api/sessions")
        for session in sessions if isinstance(sessions, list) else []:
            if session.get("path") == notebook:
                self.api("DELETE", f"/api/sessions/{session['id']}")

    def log_tail(self, n_chars: int = 4000) -> str:
        """The last ``n_chars`` characters of the server's log."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-n_chars:]

    def stop(self) -> None:
        """Stop the server by its PID (SIGTERM lets it shut its kernels down; SIGKILL its group after 20 s)."""
        if self._process is None or self.pid is None or self._process.poll() is not None:
            return
        os.kill(self.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)  # its own session: the server and the kernels it started
            self._process.wait(timeout=10)


@dataclass
class NotebookRun:
    """What the browser saw for one notebook: the problems found (empty when it passed) and how long each step took."""

    notebook: str
    problems: list[str] = field(default_factory=list)
    controls_moved: int = 0
    widget_cells: int = 0
    code_cells: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    screenshot: Path | None = None


# The notebook shown in the current tab (JupyterLab hides, but keeps, the panels of other tabs).
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"

_STATE_JS = """(panel) => {
  const root = document.querySelector(panel);
  if (!root) return null;
  const prompts = [...root.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(e => e.textContent.trim());
  const indicator = root.querySelector('.jp-Notebook-ExecutionIndicator');
  const kernel = root.querySelector('[data-jp-item-name="kernelName"]');
  const errors = [...root.querySelectorAll('.jp-OutputArea-output[data-mime-type="__STDERR__"]')]
    .filter(e => e.textContent.includes('Traceback')).length;
  const dialog = document.querySelector('.jp-Dialog .jp-Dialog-header');
  return {prompts, errors, status: indicator ? indicator.getAttribute('data-status') : null,
          kernel: kernel ? kernel.textContent.trim() : null, dialog: dialog ? dialog.textContent.trim() : null};
}""".replace("__STDERR__", STDERR_MIME)

# The controls a learner moves: sliders (noUiSlider handles) and drop-downs.
SLIDER, DROPDOWN = ".widget-slider .noUi-handle", ".widget-dropdown select"
CONTROLS = f"{SLIDER}, {DROPDOWN}"

# Per cell (in notebook order): its tracebacks, widget failures, and how many widgets rendered. A widget
# fails visibly in three ways: "Error displaying widget", an error view ("Click to show javascript error.")
# when its front-end code is missing, or "Loading widget..." for ever when its model never arrives.
_CELLS_JS = """(panel) => [...document.querySelector(panel).querySelectorAll('.jp-Notebook .jp-Cell')].map(cell => {
  const outputs = [...cell.querySelectorAll('.jp-OutputArea-output')];
  const text = e => e.textContent.trim();
  return {
    tracebacks: outputs.filter(e => e.getAttribute('data-mime-type') === '__STDERR__' && text(e).includes('Traceback'))
                       .map(e => text(e).slice(-1500)),
    widgetErrors: outputs.filter(e => text(e).includes('Error displaying widget')).map(e => text(e).slice(0, 300)),
    errorViews: cell.querySelectorAll('.jp-OutputArea-output .jupyter-widgets-error-widget').length,
    loading: outputs.filter(e => text(e) === 'Loading widget...').length,
    widgets: outputs.filter(e => e.querySelector('.jupyter-widgets') && !e.querySelector('.jupyter-widgets-error-widget')).length,
    controls: cell.querySelectorAll(`.jp-OutputArea-output :is(${CONTROLS})`).length,
  };
})""".replace("__STDERR__", STDERR_MIME).replace("${CONTROLS}", CONTROLS)

# What the outputs show, minus the controls themselves: text, images, SVG and canvases.
_FINGERPRINT_JS = """(panel) => {
  const parts = [];
  for (const out of document.querySelector(panel).querySelectorAll('.jp-Notebook .jp-OutputArea-output')) {
    const copy = out.cloneNode(true);
    copy.querySelectorAll('.widget-slider, .widget-dropdown').forEach(e => e.remove());
    parts.push(copy.textContent);
    copy.querySelectorAll('img').forEach(e => parts.push(e.getAttribute('src') || ''));
    copy.querySelectorAll('svg').forEach(e => parts.push(e.outerHTML));
    out.querySelectorAll('canvas').forEach(e => { try { parts.push(e.toDataURL()); } catch (err) {} });
  }
  return parts.join('\\u0000');
}"""


async def _click_menu(page: Page, menu: str, item: str) -> None:
    """Open a JupyterLab main-menu ``menu`` and click its ``item``, as a learner does."""
    await page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{re.escape(menu)}$")).click()
    await page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).click()


async def _state(page: Page) -> dict:
    """The shown notebook's prompts, traceback count, kernel status and kernel name."""
    return await page.evaluate(_STATE_JS, PANEL) or {}


async def _wait_for(page: Page, predicate, what: str, timeout: float) -> dict:
    """Poll the notebook state until ``predicate(state)`` holds; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    state: dict = {}
    while time.monotonic() < deadline:
        state = await _state(page)
        if state and state["dialog"]:
            raise TimeoutError(f"JupyterLab shows a dialog {state['dialog']!r} while waiting for {what}")
        if state and predicate(state):
            return state
        await asyncio.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}; last state {state}")


def _finished(state: dict) -> bool:
    """Run All is over: the kernel is idle and every code cell ran, or one raised (Run All stops there)."""
    prompts = state["prompts"]
    if state["status"] != "idle" or "[*]:" in prompts:
        return False
    return state["errors"] > 0 or all(re.fullmatch(r"\[\d+\]:", p) for p in prompts)


async def _fingerprint(page: Page) -> str:
    """A digest of everything the outputs show except the controls (sliders, drop-downs) themselves."""
    return hashlib.sha256((await page.evaluate(_FINGERPRINT_JS, PANEL)).encode()).hexdigest()


async def _move_control(page: Page, cell_index: int, control_index: int, timeout: float) -> str | None:
    """Move control ``control_index`` of cell ``cell_index`` as a learner would; None when the outputs changed.

    A slider's handle is dragged to whichever quarter of its track is farther away; a drop-down gets its
    next option.

    Returns:
        a problem description when the control's value or the outputs did not change.
    """
    control = (
        page.locator(f"{PANEL} .jp-Notebook .jp-Cell")
        .nth(cell_index)
        .locator(f".jp-OutputArea-output :is({CONTROLS})")
        .nth(control_index)
    )
    where = f"cell {cell_index}, control {control_index}"
    await control.scroll_into_view_if_needed()
    before = await _fingerprint(page)
    if await control.evaluate("e => e.tagName") == "SELECT":
        before_value = await control.input_value()
        n_options = await control.locator("option").count()
        index = await control.evaluate("e => e.selectedIndex")
        await control.select_option(index=(index + 1) % n_options)
        value = control.input_value
    else:
        slider = control.locator("xpath=ancestor::*[contains(@class, 'widget-slider')][1]")
        readout = slider.locator(".widget-readout").first
        before_value = await readout.text_content()
        handle_box, track_box = await control.bounding_box(), await slider.locator(".noUi-target").bounding_box()
        if handle_box is None or track_box is None:
            return f"{where}: the slider is not visible"
        x, y = handle_box["x"] + handle_box["width"] / 2, handle_box["y"] + handle_box["height"] / 2
        left, width = track_box["x"], track_box["width"]
        await page.mouse.move(x, y)
        await page.mouse.down()
        await page.mouse.move(left + width * (0.25 if x > left + width / 2 else 0.75), y, steps=8)
        await page.mouse.up()
        value = readout.text_content
    deadline = time.monotonic() + timeout
    while (after_value := await value()) == before_value and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    if after_value == before_value:
        return f"{where}: moving it left its value at {before_value!r}"
    while time.monotonic() < deadline:
        state = await _state(page)
        if state.get("status") == "idle" and await _fingerprint(page) != before:
            return None
        await asyncio.sleep(0.25)
    return f"{where}: moving it ({before_value} -> {after_value}) did not change any output in {timeout:.0f} s"


def saved_notebook_facts(path: Path) -> tuple[set[int], set[int]]:
    """Read a notebook file: which cells may raise (tag ``raises-exception``) and which had widget outputs when saved.

    Returns:
        (indices of cells allowed to raise, indices of cells whose saved outputs hold a widget view).
    """
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    may_raise = {i for i, cell in enumerate(cells) if "raises-exception" in cell.get("metadata", {}).get("tags", [])}
    had_widgets = {
        i
        for i, cell in enumerate(cells)
        if any(WIDGET_MIME in output.get("data", {}) for output in cell.get("outputs", []))
    }
    return may_raise, had_widgets


async def run_notebook(
    context: BrowserContext, lab: JupyterLab, notebook: str, screenshot: Path, timeout: float
) -> NotebookRun:
    """Open ``notebook`` (relative to the lab's root) in a new tab, clear it, Run All, check it, move its controls.

    Fails (adds to ``problems``) on a traceback outside cells tagged ``raises-exception``, on a widget that does
    not render (or whose saved outputs had one that does not render now), on a kernel that never gets idle,
    and on a control (each slider and drop-down of a widget's output) whose move changes no output.
    """
    run = NotebookRun(notebook)
    may_raise, had_widgets = saved_notebook_facts(lab.root / notebook)
    page = await context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    started = time.monotonic()
    try:
        await page.goto(lab.url(notebook, "t" + secrets.token_hex(6)))
        await page.wait_for_selector(f"{PANEL} .jp-Notebook .jp-Cell", timeout=timeout * 1000)
        # The kernel's name shows in the toolbar once a kernel is attached; "Run All" before that is lost.
        await _wait_for(
            page,
            lambda s: s["status"] == "idle" and s["kernel"] not in (None, "", "No Kernel", "Kernel"),
            "the kernel to start",
            min(timeout, 120),
        )
        run.seconds["open"] = time.monotonic() - started
        await _click_menu(page, "Edit", "Clear Outputs of All Cells")
        await _wait_for(page, lambda s: all(p in ("[ ]:", "") for p in s["prompts"]), "outputs to clear", 30)
        await _click_menu(page, "Run", "Run All Cells")
        state = await _wait_for(page, _finished, "Run All to finish", timeout)
        run.code_cells = len(state["prompts"])
        run.seconds["run"] = time.monotonic() - started - run.seconds["open"]
        cells = await _cell_problems(page, run, may_raise, had_widgets)
        run.widget_cells = sum(bool(cell["widgets"]) for cell in cells)
        moved_at = time.monotonic()
        for index, cell in enumerate(cells):
            for control in range(0 if cell["tracebacks"] else cell["controls"]):
                problem = await _move_control(page, index, control, timeout=60)
                if problem:
                    run.problems.append(problem)
                else:
                    run.controls_moved += 1
        if run.controls_moved:
            await _wait_for(page, lambda s: s["status"] == "idle", "the kernel after moving the controls", 60)
            await _cell_problems(page, run, may_raise, set(), when=" after moving the controls")
        run.seconds["controls"] = time.monotonic() - moved_at
        await _screenshot(page, cells, screenshot)
        run.screenshot = screenshot
    except (TimeoutError, PlaywrightError) as error:  # Playwright's own timeouts are PlaywrightErrors
        run.problems.append(f"{type(error).__name__}: {error}")
        await page.screenshot(path=str(screenshot))
        run.screenshot = screenshot
    finally:
        run.problems.extend(f"JavaScript error in the page: {error}" for error in page_errors)
        await page.close()
        await asyncio.to_thread(lab.shut_down_kernel, notebook)
        run.seconds["total"] = time.monotonic() - started
    return run


async def _cell_problems(
    page: Page, run: NotebookRun, may_raise: set[int], had_widgets: set[int], when: str = ""
) -> list[dict]:
    """Read every cell of the page and add what is wrong to ``run.problems``; return the cells as read.

    Widgets get up to 15 s to leave "Loading widget..." (their model may still be on its way).
    """
    deadline = time.monotonic() + 15
    cells = await page.evaluate(_CELLS_JS, PANEL)
    while any(cell["loading"] for cell in cells) and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        cells = await page.evaluate(_CELLS_JS, PANEL)
    for index, cell in enumerate(cells):
        where = f"cell {index}{when}"
        if cell["tracebacks"] and index not in may_raise:
            run.problems.append(f"{where} shows an error:\n{cell['tracebacks'][0]}")
        run.problems.extend(f"{where}: {message}" for message in cell["widgetErrors"])
        if cell["errorViews"]:
            view = page.locator(f"{PANEL} .jp-Notebook .jp-Cell").nth(index).locator(".jupyter-widgets-error-widget")
            await view.first.click()  # the error view shows its message only when clicked
            message = " ".join((await view.first.text_content() or "").split())[:300]
            run.problems.append(f"{where}: a widget failed to render (its front-end code did not load): {message}")
        if cell["loading"]:
            run.problems.append(
                f"{where}: a widget never rendered (still 'Loading widget...' after the kernel went idle)"
            )
        if index in had_widgets and not cell["widgets"] and not cell["tracebacks"]:
            run.problems.append(f"{where}: its saved outputs hold a widget, but no widget rendered in JupyterLab")
    return cells


async def _screenshot(page: Page, cells: list[dict], path: Path) -> None:
    """Screenshot the tab scrolled to the first cell that shows a problem, else the first widget, else the first image."""

    def first(test) -> int | None:
        return next((i for i, cell in enumerate(cells) if test(cell)), None)

    focus = first(lambda c: c["tracebacks"] or c["widgetErrors"] or c["errorViews"] or c["loading"])
    focus = focus if focus is not None else first(lambda c: c["widgets"])
    if focus is not None:
        await page.locator(f"{PANEL} .jp-Notebook .jp-Cell").nth(focus).scroll_into_view_if_needed()
    else:
        images = page.locator(f"{PANEL} .jp-OutputArea-output img")
        if await images.count():
            await images.first.scroll_into_view_if_needed()
    await page.wait_for_timeout(300)
    await page.screenshot(path=str(path))


class LabBrowser:
    """One headless Chromium (fresh profile) on a JupyterLab server, running up to ``pages`` notebooks at once.

    ``submit`` returns a ``concurrent.futures.Future`` of a ``NotebookRun``; the browser lives in a background
    thread's asyncio loop so that the tests, in the main thread, just wait for their notebook's future.
    """

    def __init__(
        self, lab: JupyterLab, screenshots_dir: Path, pages: int, timeout: float, chromium: Path = CHROMIUM
    ) -> None:
        self.lab = lab
        self.screenshots_dir = screenshots_dir
        self.pages = pages
        self.timeout = timeout
        self.chromium = chromium
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lab-browser", daemon=True)
        self._browser: Browser | None = None
        self._playwright: Playwright | None = None
        self._futures: list[concurrent.futures.Future[NotebookRun]] = []
        self._slots: asyncio.Semaphore | None = None

    def start(self) -> None:
        """Start the loop thread and Chromium."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=120)

    async def _start(self) -> None:
        self._playwright = await async_playwright().start()
        # Playwright gives this Chromium a fresh temporary --user-data-dir, removed when it closes.
        self._browser = await self._playwright.chromium.launch(
            executable_path=str(self.chromium), headless=True, args=CHROMIUM_FLAGS
        )
        self._slots = asyncio.Semaphore(self.pages)

    def submit(self, notebook: str) -> concurrent.futures.Future[NotebookRun]:
        """Queue ``notebook`` (relative to the lab's root); its screenshot goes to ``screenshots_dir``."""
        self.screenshots_dir.mkdir(parents=True, exist_ok=True)
        screenshot = self.screenshots_dir / (notebook.removesuffix(".ipynb").replace("/", "__") + ".png")
        future = asyncio.run_coroutine_threadsafe(self._run(notebook, screenshot), self._loop)
        self._futures.append(future)
        return future

    async def _run(self, notebook: str, screenshot: Path) -> NotebookRun:
        assert self._slots is not None and self._browser is not None
        async with self._slots:
            # A context per notebook: its own storage, so JupyterLab tabs never share window names or state.
            context = await self._browser.new_context(viewport={"width": 1280, "height": 1000})
            try:
                return await run_notebook(context, self.lab, notebook, screenshot, self.timeout)
            finally:
                await context.close()

    def close(self) -> None:
        """Close Chromium and stop the loop thread."""
        for future in self._futures:
            future.cancel()

        async def _close() -> None:
            if self._browser is not None:
                await self._browser.close()
            if self._playwright is not None:
                await self._playwright.stop()

        asyncio.run_coroutine_threadsafe(_close(), self._loop).result(timeout=60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
