"""A workshop on a real JupyterHub: N learners at once, each running lessons as a learner would.

    make workshop                      # installs the hub (PyPI) and its proxy (npm) into the project, then runs this
    .venv/bin/python benchmarks/bench_workshop.py [--learners 1 4 8] [--lessons 01 02 03 04 05 12]

For each N it starts a JupyterHub on loopback (dummy authenticator, local-process spawner, the
configurable-http-proxy from ``build/workshop/node_modules``), creates N learners, starts their
servers through the hub's REST API, and has every learner, all at once, open each lesson in a fresh
kernel of their own server and execute its code cells over the kernel's websocket, as JupyterLab's
"Run All" does. It measures per learner: the server's start time, the peak memory of the server
plus its kernels (resident set, sampled every 0.25 s; overall and while each lesson ran), the time
of each lesson, and failures (a cell that raised or timed out). It prints one table row per N and
exits non-zero on any failure.

Everything it starts runs in a throwaway folder and is stopped when it ends, also on an error or
Ctrl-C; it then checks that no process it started is left, and fails if one was.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import psutil
import websocket

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PROXY = REPO / "build" / "workshop" / "node_modules" / ".bin" / "configurable-http-proxy"
CELL_TIMEOUT = 300.0


@dataclass
class Learner:
    name: str
    start_seconds: float = float("nan")
    peak_bytes: int = 0
    lesson_seconds: dict[str, float] = field(default_factory=dict)
    current_lesson: str = ""
    lesson_peak_bytes: dict[str, int] = field(default_factory=dict)  # peak while each lesson ran
    failures: list[str] = field(default_factory=list)


def _config(folder: Path, port: int, token: str) -> str:
    """The hub's configuration: loopback only, everything inside ``folder``."""
    as_root = ["--allow-root"] if os.geteuid() == 0 else []
    environment = {"MPLBACKEND": "Agg", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    return f"""
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {port + 1}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{port + 2}"
c.ConfigurableHTTPProxy.command = [{str(PROXY)!r}]
c.ConfigurableHTTPProxy.pid_file = {str(folder / "proxy.pid")!r}
c.JupyterHub.db_url = "sqlite:///{folder / "hub.sqlite"}"
c.JupyterHub.cookie_secret_file = {str(folder / "cookie_secret")!r}
c.JupyterHub.pid_file = {str(folder / "hub.pid")!r}
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {str(folder / "home" / "{username}")!r}
c.Spawner.cmd = [{str(BIN / "jupyterhub-singleuser")!r}]
c.Spawner.args = {as_root!r}
c.Spawner.environment = {environment!r}
c.Spawner.start_timeout = 300
c.Spawner.http_timeout = 300
c.JupyterHub.services = [{{"name": "workshop-bench", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{
    "name": "workshop-bench",
    "scopes": ["admin:users", "admin:servers", "access:servers", "read:users"],
    "services": ["workshop-bench"],
}}]
"""


class Hub:
    """A JupyterHub process on loopback, driven through its REST API with a service token."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port = folder, port
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = folder / "hub.log"

    def start(self, timeout: float = 120.0) -> None:
        (self.folder / "jupyterhub_config.py").write_text(_config(self.folder, self.port, self.token))
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(BIN / "jupyterhub"), "-f", str(self.folder / "jupyterhub_config.py")],
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: the proxy and servers stop with it
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the hub exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.api("GET", "/hub/api/")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        raise RuntimeError(f"the hub did not answer within {timeout:g} s:\n{self.log_tail()}")

    def api(self, method: str, path: str, body: object | None = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read()
        return json.loads(text) if text else None

    def start_server(self, name: str, timeout: float = 300.0) -> float:
        """Start ``name``'s server and wait until it answers; returns the seconds it took."""
        started = time.perf_counter()
        self.api("POST", f"/hub/api/users/{name}/server")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            user = self.api("GET", f"/hub/api/users/{name}")
            server = user.get("servers", {}).get("", {})  # type: ignore[union-attr]
            if server.get("ready"):
                self.api("GET", f"/user/{name}/api/status")  # through the proxy, as a browser would
                return time.perf_counter() - started
            time.sleep(0.25)
        raise TimeoutError(f"{name}'s server was not ready after {timeout:g} s")

    def log_tail(self, n_chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n_chars:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # the hub stops its servers and proxy on SIGTERM
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _message(msg_type: str, content: dict, session: str) -> dict:
    header = {
        "msg_id": uuid.uuid4().hex,
        "msg_type": msg_type,
        "session": session,
        "username": "learner",
        "version": "5.3",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return {
        "header": header,
        "parent_header": {},
        "metadata": {},
        "content": content,
        "channel": "shell",
        "buffers": [],
    }


def run_lesson(hub: Hub, learner: Learner, lesson: Path) -> None:
    """Open ``lesson`` in a fresh kernel of the learner's server and execute its code cells in order."""
    name = learner.name
    kernel = hub.api("POST", f"/user/{name}/api/kernels", {"name": "python3", "path": "notebooks"})
    kernel_id = kernel["id"]  # type: ignore[index]
    session = uuid.uuid4().hex
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{hub.port}/user/{name}/api/kernels/{kernel_id}/channels?session_id={session}",
        header=[f"Authorization: token {hub.token}"],
        timeout=CELL_TIMEOUT,
    )
    started = time.perf_counter()
    learner.current_lesson = lesson.stem
    try:
        cells = [c for c in nbformat.read(lesson, as_version=4).cells if c.cell_type == "code"]
        for index, cell in enumerate(cells):
            request = _message(
                "execute_request",
                {
                    "code": cell.source,
                    "silent": False,
                    "store_history": True,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
                session,
            )
            ws.send(json.dumps(request))
            msg_id, idle, reply = request["header"]["msg_id"], False, None
            while not (idle and reply):
                raw = ws.recv()
                if isinstance(raw, bytes):  # a message with binary buffers (a widget's image): not a reply
                    continue
                message = json.loads(raw)
                if message.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = message["header"]["msg_type"]
                if kind == "execute_reply":
                    reply = message["content"]
                elif kind == "status" and message["content"]["execution_state"] == "idle":
                    idle = True
            may_raise = "raises-exception" in cell.get("metadata", {}).get("tags", [])
            if reply["status"] != "ok" and not may_raise:
                learner.failures.append(f"{lesson.stem} cell {index}: {reply.get('ename')}: {reply.get('evalue')}")
                break
    except (websocket.WebSocketException, OSError) as error:
        learner.failures.append(f"{lesson.stem}: {type(error).__name__}: {error}")
    finally:
        learner.lesson_seconds[lesson.stem] = time.perf_counter() - started
        ws.close()
        hub.api("DELETE", f"/user/{name}/api/kernels/{kernel_id}")


def _server_processes(home: Path) -> list[psutil.Process]:
    """The learner's server (started in its home folder) and everything under it (kernels)."""
    found = []
    for process in psutil.process_iter(["cwd", "cmdline"]):
        try:
            if process.info["cwd"] == str(home) and "jupyterhub-singleuser" in " ".join(process.info["cmdline"] or []):
                found.append(process)
                found.extend(process.children(recursive=True))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@contextmanager
def memory_sampler(learners: list[Learner], homes: dict[str, Path], every: float = 0.25) -> Iterator[None]:
    """Track each learner's peak resident memory (server + kernels) while the block runs."""
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for learner in learners:
                total = 0
                for process in _server_processes(homes[learner.name]):
                    try:
                        total += process.memory_info().rss
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        continue
                learner.peak_bytes = max(learner.peak_bytes, total)
                if learner.current_lesson:
                    lesson = learner.current_lesson
                    learner.lesson_peak_bytes[lesson] = max(learner.lesson_peak_bytes.get(lesson, 0), total)
            stop.wait(every)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _leftovers(folder: Path) -> list[psutil.Process]:
    """Processes still running that this run started (they mention its throwaway folder)."""
    left = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        try:
            text = " ".join(process.info["cmdline"] or []) + " " + (process.info["cwd"] or "")
            if str(folder) in text and process.pid != os.getpid():
                left.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return left


def run_workshop(n_learners: int, lessons: list[Path], port: int) -> list[Learner]:
    """One hub, ``n_learners`` learners running ``lessons`` at once; everything is stopped after."""
    folder = Path(tempfile.mkdtemp(prefix=f"workshop-{n_learners}-"))
    hub = Hub(folder, port)
    learners = [Learner(f"learner{i:02d}") for i in range(n_learners)]
    homes = {learner.name: folder / "home" / learner.name for learner in learners}
    try:
        hub.start()
        hub.api("POST", "/hub/api/users", {"usernames": [learner.name for learner in learners]})
        for home in homes.values():  # each learner gets their own copy of the course's lessons
            shutil.copytree(REPO / "notebooks", home / "notebooks", ignore=shutil.ignore_patterns("*.py"))
        with memory_sampler(learners, homes), ThreadPoolExecutor(max_workers=n_learners) as pool:

            def session(learner: Learner) -> None:
                try:
                    learner.start_seconds = hub.start_server(learner.name)
                    for lesson in lessons:
                        run_lesson(hub, learner, lesson)
                except Exception as error:  # a failed learner is reported, the others go on
                    learner.failures.append(f"{type(error).__name__}: {error}")

            list(pool.map(session, learners))
        for learner in learners:
            try:
                hub.api("DELETE", f"/hub/api/users/{learner.name}/server")
            except urllib.error.URLError:
                pass
    finally:
        hub.stop()
        time.sleep(1.0)
        left = _leftovers(folder)
        for process in left:
            process.kill()
        if left:
            learners[0].failures.append(
                f"{len(left)} process(es) outlived the hub and were killed: " + ", ".join(str(p.pid) for p in left)
            )
        if not any(learner.failures for learner in learners):
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"(kept {folder} for its hub.log)", file=sys.stderr)
    return learners


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learners", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--lessons", nargs="+", default=["01", "02", "03", "04", "05", "12"])
    parser.add_argument("--port", type=int, default=18000)
    args = parser.parse_args(argv)
    missing = [str(p) for p in (PROXY, BIN / "jupyterhub", BIN / "jupyterhub-singleuser") if not p.exists()]
    if missing:
        print(f"missing {', '.join(missing)}: run `make workshop`, which installs them", file=sys.stderr)
        return 2
    lessons = [next(iter(sorted((REPO / "notebooks").glob(f"{n}_*.ipynb")))) for n in args.lessons]

    def stop_on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so that run_workshop's cleanup runs

    signal.signal(signal.SIGTERM, stop_on_term)
    load = os.getloadavg()[0]
    print(
        f"JupyterHub on loopback, local-process spawner; lessons {' '.join(args.lessons)} in a fresh kernel each; "
        f"{os.cpu_count()} CPUs, load average {load:.1f} at start"
    )
    header = (
        f"{'N':>3} | {'server start p50/max':>20} | {'peak MiB/learner med/max':>24} | "
        f"{'lesson s p50/p95':>16} | {'all lessons s max':>17} | failures"
    )
    print(header)
    print("-" * len(header))
    failed = False
    for n in args.learners:
        learners = run_workshop(n, lessons, args.port)
        starts = [le.start_seconds for le in learners]
        peaks = [le.peak_bytes / 2**20 for le in learners]
        times = [t for le in learners for t in le.lesson_seconds.values()]
        totals = [sum(le.lesson_seconds.values()) for le in learners]
        failures = [f"{le.name}: {f}" for le in learners for f in le.failures]
        failed |= bool(failures)
        print(
            f"{n:>3} | {statistics.median(starts):>9.1f} / {max(starts):>8.1f} | "
            f"{statistics.median(peaks):>11.0f} / {max(peaks):>10.0f} | "
            f"{_percentile(times, 0.5):>7.1f} / {_percentile(times, 0.95):>6.1f} | {max(totals):>17.1f} | "
            f"{len(failures)}"
        )
        per_lesson = {
            stem: [le.lesson_seconds.get(stem, float("nan")) for le in learners] for stem in (p.stem for p in lessons)
        }
        print(
            "      per lesson, median s: "
            + ", ".join(f"{s.split('_')[0]} {statistics.median(v):.1f}" for s, v in per_lesson.items())
        )
        print(
            "      per lesson, max peak MiB: "
            + ", ".join(
                f"{stem.split('_')[0]} {max(le.lesson_peak_bytes.get(stem, 0) for le in learners) / 2**20:.0f}"
                for stem in per_lesson
            )
        )
        for line in failures:
            print(f"      FAILED {line}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
