"""What a process that runs learner code may do: its resource limits and its audit hook.

Learner code runs in two places, the grading worker (``worker.py``, a notebook's cells and the
learner's functions) and the Triton sandbox's interpreter child (``triton_sandbox.py``, a kernel's
body under ``TRITON_INTERPRET=1``). Both call ``limit_resources`` and ``install_guard`` before any
learner code runs; the grading process computes the folders to protect (``protected_folders``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from .runner import set_trace

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding attention_course/ (and solutions/)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = {
    "os.remove": "delete",
    "os.rename": "rename",
    "os.rmdir": "delete",
    "os.mkdir": "create",
    "os.chmod": "change",
    "os.chown": "change",
    "os.link": "link",
    "os.symlink": "link",
    "os.truncate": "truncate",
    "os.utime": "change",
    "shutil.rmtree": "delete",
}
_PROGRAM_EVENTS = (
    "os.system",
    "subprocess.Popen",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "os.forkpty",
    "pty.spawn",
    "os.kill",
    "os.killpg",
)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def install_guard(workdir: str, protected: list[str]) -> list[str]:
    """Install the audit hook; returns the list it appends one line to per refused attempt."""
    workdir = os.path.realpath(workdir)
    protected = [os.path.realpath(p) for p in protected]
    allowed_writes = (workdir, os.path.realpath(os.devnull))
    attempts: list[str] = []
    set_trace_code = set_trace.__code__

    def refuse(what: str) -> None:
        line = f"the notebook's code tried to {what} (refused)"
        if line not in attempts:
            attempts.append(line)
        raise PermissionError(f"the grader does not let notebook code {what}")

    def resolve(path: Any) -> str | None:
        if isinstance(path, int) or path is None:
            return None
        try:
            path = os.fsdecode(os.fspath(path))
        except TypeError:
            return None
        return os.path.realpath(path)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path = resolve(args[0])
            if path is None:
                return
            mode, flags = (args[1] or ""), (args[2] if len(args) > 2 and isinstance(args[2], int) else 0)
            writing = any(c in str(mode) for c in "wax+") or bool(flags & _WRITE_FLAGS)
            if writing and not any(_inside(path, folder) for folder in allowed_writes):
                refuse(f"write {path} outside its working folder")
            if any(_inside(path, folder) for folder in protected):
                refuse(f"read {path}")
        elif event in _PATH_EVENTS:
            for arg in args[:2]:
                path = resolve(arg) if isinstance(arg, str | bytes | os.PathLike) else None
                if path is not None and not _inside(path, workdir):
                    refuse(f"{_PATH_EVENTS[event]} {path} outside its working folder")
        elif event.startswith(_PROGRAM_EVENTS):
            refuse("signal another process" if event.startswith("os.kill") else "start another program")
        elif event in ("ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle"):
            refuse("load native code through ctypes")
        elif event in ("sys.setprofile", "sys.settrace"):
            if event == "sys.setprofile" or sys._getframe(1).f_code is not set_trace_code:
                refuse(f"call {event} (the grader's own tracer is in use)")

    sys.addaudithook(hook)
    return attempts


def protected_folders(folders: list[Path]) -> list[str]:
    """Folders the learner's code may not read: solutions/, and the folders of the notebooks graded
    (other learners' work), unless one holds the package or Python itself (the worker imports from them)."""
    needed = [_PACKAGE_ROOT / "attention_course", Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()]
    found = []
    for folder in [_PACKAGE_ROOT / "solutions", Path.cwd() / "solutions", *folders]:
        folder = folder.resolve()
        if not any(n == folder or folder in n.parents for n in needed) and str(folder) not in found:
            found.append(str(folder))
    return found


MEMORY_LIMIT_BYTES = 8 << 30  # address space of a process that runs learner code (not set where CUDA is used)


def limit_resources(limits: dict[str, Any]) -> None:
    """CPU seconds (a backstop: the grader stops the process at each phase's wall-clock limit) and memory.

    Used by the grading worker and by the Triton sandbox's interpreter child, the two places learner code runs.
    """
    import resource

    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    cpu = limits.get("cpu_seconds")
    if cpu:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    memory = limits.get("memory_bytes")
    if memory:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
