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
# # Exercise 08 · Positional encodings
#
# Lesson: [08 positional encodings](../notebooks/08_positional_encodings.ipynb). Two functions,
# each followed by a check cell that says **PASS**, **TODO** (not done yet) or **FAIL** with a hint.

# %%
import torch

from attention_course.grading import check

_ = torch.manual_seed(0)  # the same random numbers on every run

# %% [markdown]
# ## 1. The sinusoidal table
#
# $$PE_{p,\,2i} = \sin\!\left(\frac{p}{b^{2i/d}}\right), \qquad
#   PE_{p,\,2i+1} = \cos\!\left(\frac{p}{b^{2i/d}}\right), \qquad p = 0, \dots, P - 1$$
#
# with $d$ = `d_model` (even) and $b$ = `base`. Return a float32 tensor of shape `(P, d_model)`.

# %%
def sinusoidal_table(n_positions: int, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """float32 (n_positions, d_model): even columns sin(p / base^(2i/d)), odd columns cos(...).

    Hints: `torch.arange(0, d_model, 2)` gives the 2i's; fill `table[:, 0::2]` and `table[:, 1::2]`.
    Computing the angles in float64 and calling `.float()` at the end is the most accurate.
    """
    ### BEGIN SOLUTION
    positions = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (P, 1)
    frequencies = base ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (d/2,)
    angles = positions * frequencies  # (P, d/2)
    table = torch.empty(n_positions, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table.float()
    ### END SOLUTION


# %%
check("sinusoidal_table", sinusoidal_table)

# %% [markdown]
# ## 2. Rotary position embeddings (RoPE), half-split
#
# Coordinate $i$ of a query or key pairs with coordinate $i + d/2$; at position $p$ the pair turns
# by the angle $p\,\theta_i$, $\theta_i = b^{-2i/d}$:
#
# $$\mathrm{RoPE}(x) = x \odot \cos + \mathrm{rotate\_half}(x) \odot \sin, \qquad
#   \mathrm{rotate\_half}([x_1, x_2]) = [-x_2, x_1]$$
#
# where `cos` and `sin` have the angles of pair $i$ in both columns $i$ and $i + d/2$. Positions
# default to `0 .. L-1`. Return a tensor of `x`'s shape and dtype.

# %%
def apply_rope(x: torch.Tensor, positions: torch.Tensor | None = None, base: float = 10000.0) -> torch.Tensor:
    """Rotate x (..., L, d_head) by the positions (L,) of its rows (default 0..L-1); same shape and dtype.

    Hints: angles (L, d_head/2) = positions[:, None] * theta; repeat them with
    `torch.cat([angles, angles], dim=-1)`; rotate_half(x) = torch.cat([-x2, x1], dim=-1).
    """
    ### BEGIN SOLUTION
    length, d_head = x.shape[-2:]
    if positions is None:
        positions = torch.arange(length)
    theta = base ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)  # (d/2,)
    angles = positions.to(torch.float64)[:, None] * theta  # (L, d/2)
    angles = torch.cat([angles, angles], dim=-1)  # (L, d): pair i with i + d/2
    rotated_half = torch.cat([-x[..., d_head // 2 :], x[..., : d_head // 2]], dim=-1)
    return x * torch.cos(angles).to(x.dtype) + rotated_half * torch.sin(angles).to(x.dtype)
    ### END SOLUTION


# %%
check("apply_rope", apply_rope)

# %% [markdown]
# Done? Lesson [09 KV cache](../notebooks/09_kv_cache.ipynb) makes decoding fast.
