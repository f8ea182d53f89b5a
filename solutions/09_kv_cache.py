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
# # Exercise 09 · The KV cache
#
# Lesson: [09 KV cache](../notebooks/09_kv_cache.ipynb). One function, followed by a check cell
# that says **PASS**, **TODO** (not done yet) or **FAIL** with a hint.

# %%
import torch

from attention_course import apply_rope, causal_mask
from attention_course.grading import check
from attention_course.kv_cache import grouped_query_attention

_ = torch.manual_seed(0)  # the same random numbers on every run

# %% [markdown]
# ## The cached attention step
#
# One attention layer, one generation step. $T$ new tokens arrive (usually $T = 1$; $T$ = the
# prompt's length for the prefill) at positions `length .. length + T - 1`. The cache holds the
# rotated keys and the values of the `length` earlier tokens, in the first `length` positions of
# `k_cache` and `v_cache`; a **preallocated** cache has more positions than that, unused.
#
# 1. Rotate the new queries and keys with RoPE **at their positions**:
#    `apply_rope(x, positions)` with `positions = torch.arange(length, length + T)`.
# 2. Append the new keys and values to the cached ones along the **positions** axis (`dim=-2` of
#    `(B, heads, positions, d_head)`), taking only the cache's first `length` positions.
# 3. Attend with the new queries' rows of the causal mask, the last $T$ rows of
#    `causal_mask(length + T)`: new query $i$ sits at position `length + i` and sees keys
#    `0 .. length + i`.
#    `grouped_query_attention(q, keys, values, mask)` does the attention when several query heads
#    share each key/value head (`n_heads` a multiple of `n_kv_heads`).
#
# $$K = \begin{bmatrix} K_\text{cache}[:\text{length}] \\ \mathrm{RoPE}(k_\text{new}) \end{bmatrix},\qquad
#   \text{output} = \mathrm{softmax}\!\left(\frac{\mathrm{RoPE}(q_\text{new})\, K^\top}{\sqrt{d_\text{head}}}
#   + M\right) V$$
#
# Return the output and the full keys and values (they become the next step's cache). Do not
# change the inputs in place: build new tensors (`torch.cat`).

# %%
def cached_attention_step(
    q_new: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor,
    k_cache: torch.Tensor, v_cache: torch.Tensor, length: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Append T new tokens to the cache and attend over it.

    Args:
        q_new: (B, n_heads, T, d_head), before RoPE.
        k_new, v_new: (B, n_kv_heads, T, d_head); k_new before RoPE.
        k_cache, v_cache: (B, n_kv_heads, capacity, d_head); the first `length` positions are cached.
        length: number of tokens already cached.

    Returns:
        output (B, n_heads, T, d_head), keys and values (B, n_kv_heads, length + T, d_head).

    Hints: slice with k_cache[:, :, :length]; a single new query (T = 1) may see every key.
    """
    ### BEGIN SOLUTION
    n_new = q_new.shape[-2]
    positions = torch.arange(length, length + n_new)  # where the new tokens sit
    q_new, k_new = apply_rope(q_new, positions), apply_rope(k_new, positions)
    keys = torch.cat([k_cache[:, :, :length], k_new], dim=-2)  # (B, n_kv_heads, length + T, d_head)
    values = torch.cat([v_cache[:, :, :length], v_new], dim=-2)
    mask = causal_mask(length + n_new)[-n_new:]  # (T, length + T): the new queries' rows
    return grouped_query_attention(q_new, keys, values, mask), keys, values
    ### END SOLUTION


# %%
check("cached_attention_step", cached_attention_step)

# %% [markdown]
# Passed? Your function drops into the package's decoder: in a new cell, compare
# `generate(model, prompt, 50, cache_kind="growing", step_fn=cached_attention_step)` with
# `generate(model, prompt, 50, use_cache=False)` for
# `model = attention_course.decoder.Decoder(attention_course.decoder.DecoderConfig(n_kv_heads=2)).eval()`
# and `prompt = torch.tensor([[1, 2, 3]])` (`generate` lives in `attention_course.kv_cache`).
#
# Next: lesson [10 sparse attention](../notebooks/10_sparse_attention.ipynb).
