# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercise 04 · A numerically stable softmax
#
# Lesson: [04 softmax](../notebooks/04_softmax.ipynb). Write the function in the cell below,
# then run the check cell right under it: it says **PASS**, **TODO** (not done yet) or
# **FAIL** with a hint and a small example that goes wrong.
#
# Run `attention-course grade exercises/04_softmax.ipynb` in a terminal to grade the whole notebook.

# %%
import torch

from attention_course.grading import check

_ = torch.manual_seed(0)  # the same random numbers on every run

# %% [markdown]
# ## Softmax with a temperature
#
# $$\mathrm{softmax}(x)_i = \frac{e^{x_i/T}}{\sum_j e^{x_j/T}}
#   = \frac{e^{x_i/T - m}}{\sum_j e^{x_j/T - m}}, \qquad m = \max_j x_j / T$$
#
# Subtracting the maximum $m$ changes nothing mathematically but keeps every exponent $\le 0$,
# so `exp` never overflows. Work along the axis `dim`, for any number of dimensions.

# %%
def softmax(x: torch.Tensor, dim: int = -1, temperature: float = 1.0) -> torch.Tensor:
    """Numerically stable softmax of `x` along `dim`.

    x: scores of any shape, floating point. Returns a tensor of the same shape and dtype whose
    entries along `dim` are >= 0 and sum to 1. (A row that is all -inf, a query with every key
    masked, has no softmax: this exercise leaves it out; lesson 05 deals with it.)

    Hints: divide by the temperature first; `x.amax(dim=dim, keepdim=True)` keeps the reduced
    axis so it broadcasts back; sum along `dim` only.
    """
    ### BEGIN SOLUTION
    z = x / temperature
    z = z - z.amax(dim=dim, keepdim=True)
    exps = torch.exp(z)
    return exps / exps.sum(dim=dim, keepdim=True)
    ### END SOLUTION


# %%
check("softmax", softmax)

# %% [markdown]
# Done? Lesson [05 masking](../notebooks/05_masking.ipynb) uses this softmax to hide keys a
# query must not see.
