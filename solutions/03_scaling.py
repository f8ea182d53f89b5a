# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercise 03 · Scaled scores
#
# Lesson: [03 scaling](../notebooks/03_scaling.ipynb). Write the function in the cell below,
# then run the check cell right under it: it says **PASS**, **TODO** (not done yet) or **FAIL**
# with a hint and a small example that goes wrong.
#
# Run `attention-course grade exercises/03_scaling.ipynb` in a terminal to grade the whole notebook.

# %%
import math

import torch

from attention_course.grading import check

_ = torch.manual_seed(0)

# %% [markdown]
# ## Scores divided by $\sqrt{d_k}$
#
# $$S = \frac{Q K^\top}{\sqrt{d_k}}$$
#
# `q` is `(..., L, d_k)` and `k` is `(..., S, d_k)`; the result is `(..., L, S)`. $d_k$ is the
# width of each query and key: their **last** axis, whatever batch or head axes come before it.
#
# The optional `scale` replaces $1/\sqrt{d_k}$: when it is given, return $Q K^\top \cdot$ `scale`
# (PyTorch's `scaled_dot_product_attention` has the same argument).

# %%
def scaled_attention_scores(q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Scores Q K^T multiplied by `scale` (default 1 / sqrt(d_k)).

    q: (..., L, d_k); k: (..., S, d_k). Returns (..., L, S).

    Hints: `math.sqrt`; `q.shape[-1]` is d_k; `k.transpose(-2, -1)` works for any number of axes.
    """
    ### BEGIN SOLUTION
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    return q @ k.transpose(-2, -1) * scale
    ### END SOLUTION


# %%
check("scaled_attention_scores", scaled_attention_scores)

# %% [markdown]
# Done? Lesson [04 softmax](../notebooks/04_softmax.ipynb) turns these scores into weights, and
# shows what goes wrong when they are large.
