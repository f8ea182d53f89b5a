"""Settings for the whole test session, applied before any test module is imported."""

from __future__ import annotations

import os

import torch

# Triton reads TRITON_INTERPRET once, when it is first imported. Without a GPU its kernels can only
# run in the interpreter, so set it before any test module, or a library that pulls Triton in,
# imports it first.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
