"""Settings for the whole test session, applied before any test module is imported."""

from __future__ import annotations

import os

import pytest
import torch

# Triton reads TRITON_INTERPRET once, when it is first imported. Without a GPU its kernels can only
# run in the interpreter, so set it before any test module, or a library that pulls Triton in,
# imports it first.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


# The test files that run notebooks, a browser, `make lab` or the whole grader catalogue: marked
# `slow`, so that `make test-fast` (pytest -m "not slow") runs the unit tests alone.
SLOW_FILES = {
    "test_browser.py",
    "test_grader_catalogue.py",
    "test_html.py",
    "test_notebooks.py",
    "test_setup.py",
    "test_pretrained.py",
    "test_triton_flash.py",
}
# Single tests elsewhere that grade whole notebooks in subprocesses.
SLOW_TESTS = {
    "test_broken_notebooks_are_reported_not_raised",
    "test_a_sleeping_function_is_stopped_and_reported_by_the_command",
    "test_grade_command_exit_codes_and_score",
    "test_class_report",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SLOW_FILES or getattr(item, "originalname", item.name) in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
