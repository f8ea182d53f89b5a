"""Environment variables the package sets are scoped and restored (attention_course._environment)."""

from __future__ import annotations

import os

import pytest
import torch

from attention_course._environment import scoped_environ
from attention_course.measure import peak_memory_bytes

NAME = "ATTENTION_COURSE_TEST_VARIABLE"


def test_scoped_environ_sets_then_restores_even_on_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, "before")
    monkeypatch.delenv(NAME + "_UNSET", raising=False)
    with pytest.raises(RuntimeError), scoped_environ(**{NAME: "inside", NAME + "_UNSET": "new"}):
        assert os.environ[NAME] == "inside" and os.environ[NAME + "_UNSET"] == "new"
        raise RuntimeError("leave the block early")
    assert os.environ[NAME] == "before" and NAME + "_UNSET" not in os.environ
    with scoped_environ(**{NAME: None}):
        assert NAME not in os.environ  # None removes a variable for the block
    assert os.environ[NAME] == "before"


def test_peak_memory_leaves_the_environment_as_it_found_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KINETO_LOG_LEVEL", raising=False)
    before = dict(os.environ)
    assert peak_memory_bytes(lambda: torch.ones(1000)) >= 4000
    # (PyTorch's profiler itself adds TORCHINDUCTOR_CACHE_DIR on first use: not ours to undo.)
    assert "KINETO_LOG_LEVEL" not in os.environ and before.items() <= dict(os.environ).items()
