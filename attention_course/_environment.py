"""Environment variables (and PyTorch's thread count) that the package sets, each for as short a time as it can.

Process-wide settings, all of them (the one documented place; CONTRIBUTING.md links here):

* ``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE`` = 1: only while ``pretrained.load_sentence_transformer``
  imports and loads the model (:func:`scoped_environ`), then restored. Hugging Face's libraries
  read them when first imported, so that first import stays offline for the process's life.
* ``KINETO_LOG_LEVEL`` = 6 (unless set): only while ``measure.peak_memory_bytes`` profiles, so the
  profiler prints no start/stop lines into notebook outputs; then restored.
* ``TRITON_INTERPRET`` = 1 (unless set), by ``triton_flash`` when it is imported on a machine without
  a CUDA GPU, before ``triton`` is first imported, and **not restored**: every ``@triton.jit`` reads
  it when it decorates, and a learner's kernel defined later in the notebook must run in the
  interpreter too. ``tests/conftest.py`` sets it for the test session for the same reason.
* PyTorch's thread count (``torch.set_num_threads``), not an environment variable but as
  process-wide: set to 1 by :func:`scoped_torch_threads` while ``flash``'s tiled passes run (their
  query tiles run on threads of their own, and the calling thread's operations stay
  single-threaded), and while ``measure``'s memory probes run (the profiler sees the calling thread
  only); restored after.
* In their own processes only: ``MPLBACKEND=Agg`` in the grading worker (``grading/worker.py``),
  ``TRITON_INTERPRET`` in the Triton sandbox's children (``triton_compile.child_env``), and
  ``OMP_WAIT_POLICY=PASSIVE`` in ``benchmarks/bench_sparse.py`` (before PyTorch starts OpenMP).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def scoped_environ(**values: str | None) -> Iterator[None]:
    """Set (or, with ``None``, remove) environment variables inside a ``with`` block; restore them after.

    Example: ``with scoped_environ(HF_HUB_OFFLINE="1"): ...``. Restores on exceptions too: a
    variable that was unset is removed again, one that was set gets its old value back.
    """
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


@contextmanager
def scoped_torch_threads(n_threads: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n_threads)``; restore the caller's count after."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
