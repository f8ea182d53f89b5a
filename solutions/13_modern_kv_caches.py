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
# # Exercise 13 · Modern KV caches
#
# Lesson: [13 modern KV caches](../notebooks/13_modern_kv_caches.ipynb). Three functions, each
# followed by a check cell that says **PASS**, **TODO** (not done yet) or **FAIL** with a hint.

# %%
import math

import torch

from attention_course import apply_rope, causal_mask
from attention_course.grading import check
from attention_course.kv_cache import grouped_query_attention

_ = torch.manual_seed(0)  # the same random numbers on every run

# %% [markdown]
# ## 1. One step of a rolling buffer with attention sinks
#
# The buffer has `capacity = n_sinks + window` slots (`k_cache.shape[-2]`). The token at absolute
# `position` is stored in
#
# $$\text{slot} = \begin{cases} \text{position} & \text{position} < S \\
#   S + (\text{position} - S) \bmod W & \text{otherwise} \end{cases}$$
#
# so the sinks stay and each new token evicts the oldest window token. After writing it, the
# filled slots are `0 .. position` while `position < capacity`, else all of them. Then the new
# query attends over the filled slots (`grouped_query_attention(q, keys, values)`: one query, no mask).
#
# Positions (RoPE, `apply_rope(x, positions)`) depend on `scheme`:
# * `"absolute"`: rotate the new key and the query at `position`, store the **rotated** key.
# * `"in_cache"`: store the key **unrotated**. Put the filled slots in the **order of their
#   tokens** (the sinks, then the window from its oldest token on), rotate those keys at positions
#   `0 .. n - 1` and the query at `n - 1`.
#
# Return the output and the updated buffers as new tensors (clone; do not change the arguments).

# %%
def rolling_attention_step(
    q_new: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    position: int, n_sinks: int, scheme: str = "absolute",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Write one new token into a sink + window buffer and attend over the filled slots.

    Args:
        q_new: (B, n_heads, 1, d_head) before RoPE.
        k_new, v_new: (B, n_kv_heads, 1, d_head); k_new before RoPE.
        k_cache, v_cache: (B, n_kv_heads, n_sinks + window, d_head), the buffer before this step.
        position: the new token's absolute position.
        n_sinks: how many first tokens are never evicted.
        scheme: "absolute" or "in_cache".

    Returns:
        output (B, n_heads, 1, d_head), and the updated k_cache and v_cache (same shapes).

    Hints: the oldest window token still cached after this step is position - window + 1, in slot
    n_sinks + (position - window + 1 - n_sinks) % window; torch.arange(...) % window walks the ring.
    """
    ### BEGIN SOLUTION
    capacity = k_cache.shape[-2]
    window = capacity - n_sinks
    slot = position if position < n_sinks else n_sinks + (position - n_sinks) % window
    if position < capacity:
        order = torch.arange(position + 1)  # slots in token order: not wrapped yet
    else:
        oldest = position - window + 1
        order = torch.cat([torch.arange(n_sinks), n_sinks + (oldest - n_sinks + torch.arange(window)) % window])
    k_cache, v_cache = k_cache.clone(), v_cache.clone()
    if scheme == "absolute":
        here = torch.tensor([position])
        q_new, k_new = apply_rope(q_new, here), apply_rope(k_new, here)
        k_cache[:, :, slot : slot + 1] = k_new
        v_cache[:, :, slot : slot + 1] = v_new
        keys = k_cache[:, :, order]
    else:
        k_cache[:, :, slot : slot + 1] = k_new  # unrotated
        v_cache[:, :, slot : slot + 1] = v_new
        in_cache = torch.arange(len(order))
        keys = apply_rope(k_cache[:, :, order], in_cache)
        q_new = apply_rope(q_new, in_cache[-1:])
    output = grouped_query_attention(q_new, keys, v_cache[:, :, order])
    ### END SOLUTION
    return output, k_cache, v_cache


# %%
check("rolling_attention_step", rolling_attention_step)

# %% [markdown]
# ## 2. Writing and reading through a block table
#
# A paged cache keeps one **pool** of blocks, `(n_blocks, heads, block_size, d_head)`. A sequence's
# **block table** lists its blocks: token `t` is in block `block_table[t // block_size]` at offset
# `t % block_size`. Write the new token's row at position `length`, then return the sequence's
# `length + 1` rows in order, `(heads, length + 1, d_head)`.
#
# The block for position `length` is already in the table. If it is **shared** with another
# sequence (`ref_counts[block] > 1`), copy it into `spare_block` first, point the table entry at
# the copy, and write there: the other sequence must not see the new token (copy-on-write).
#
# Return the rows and the updated pool and table as new tensors (clone them first). `ref_counts` is
# only read here: leave it as it is (the cache's bookkeeping updates it, not this function).

# %%
def paged_write_and_gather(
    pool: torch.Tensor, block_table: torch.Tensor, ref_counts: torch.Tensor, length: int, new: torch.Tensor,
    spare_block: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Store one token's row at position `length` through the block table, then read all rows back.

    Args:
        pool: (n_blocks, heads, block_size, d_head).
        block_table: int (max_blocks,), this sequence's blocks in order (unused entries may be -1).
        ref_counts: int (n_blocks,), how many sequences use each block (read only).
        length: tokens already stored; the new one goes to position `length`.
        new: (heads, d_head).
        spare_block: a free block to copy a shared block into.

    Returns:
        rows (heads, length + 1, d_head), the new pool and the new block table.

    Hints: positions = torch.arange(length + 1); pool[blocks, :, offsets] with two index tensors gives
    (length + 1, heads, d_head).
    """
    ### BEGIN SOLUTION
    pool, block_table = pool.clone(), block_table.clone()
    block_size = pool.shape[2]
    index, offset = length // block_size, length % block_size
    block = int(block_table[index])
    if int(ref_counts[block]) > 1:  # shared: copy on write
        pool[spare_block] = pool[block]
        block_table[index] = spare_block
        block = spare_block
    pool[block, :, offset] = new
    positions = torch.arange(length + 1)
    rows = pool[block_table[positions // block_size], :, positions % block_size]  # (length + 1, heads, d_head)
    ### END SOLUTION
    return rows.transpose(0, 1), pool, block_table


# %%
check("paged_write_and_gather", paged_write_and_gather)

# %% [markdown]
# ## 3. One MLA step in the absorbed form
#
# The cache holds, per token, a latent `c` (`latents (B, S, d_latent)`) and a rotated key part
# `k_rope (B, S, d_rope)` shared by all heads. The `T` new tokens are the **last** `T` of the `S`
# (their entries were appended first). Per head `h`:
#
# $$s = \frac{(q^{C} W^{UK\top}_h)\cdot c + \mathrm{RoPE}(q^{R})\cdot k^{R}}{\sqrt{d_\text{nope} + d_\text{rope}}},
#   \qquad \text{output} = \sum_h \mathrm{softmax}(s)\, C \; W^{UV}_h W^{O}_h.$$
#
# * Fold `w_uk` into the query (`q_nope @ w_uk.transpose(-2, -1)`, `(B, H, T, d_latent)`) and score
#   it against the latents **as they are**; never build per-head keys.
# * Rotate `q_rope` at positions `S - T .. S - 1`; `k_rope` is already rotated. `q_nope` is not rotated.
# * With `T > 1`, new query `i` sees keys up to `S - T + i`: rows `causal_mask(S)[S - T:]`.
# * Mix the latents with the weights, then map with `w_uv @ w_o` (`(H, d_latent, d_model)`) and sum over heads.

# %%
def mla_absorbed_step(
    q_nope: torch.Tensor, q_rope: torch.Tensor, latents: torch.Tensor, k_rope: torch.Tensor,
    w_uk: torch.Tensor, w_uv: torch.Tensor, w_o: torch.Tensor,
) -> torch.Tensor:
    """Multi-head latent attention for T new tokens, attending directly over the cached latents.

    Args:
        q_nope: (B, H, T, d_nope); q_rope: (B, H, T, d_rope), before RoPE.
        latents: (B, S, d_latent); k_rope: (B, S, d_rope), rotated.
        w_uk: (H, d_latent, d_nope); w_uv: (H, d_latent, d_v); w_o: (H, d_v, d_model).

    Returns:
        (B, T, d_model).

    Hints: latents[:, None] broadcasts the latents over the heads; torch.einsum("bhtc,hcd->btd", ...)
    applies each head's matrix and sums the heads.
    """
    ### BEGIN SOLUTION
    n_new, n_keys = q_nope.shape[-2], latents.shape[-2]
    q_rope = apply_rope(q_rope, torch.arange(n_keys - n_new, n_keys))
    q_latent = q_nope @ w_uk.transpose(-2, -1)  # (B, H, T, d_latent)
    scores = q_latent @ latents[:, None].transpose(-2, -1) + q_rope @ k_rope[:, None].transpose(-2, -1)
    scores = scores / math.sqrt(q_nope.shape[-1] + q_rope.shape[-1])  # (B, H, T, S)
    if n_new > 1:
        scores = scores.masked_fill(~causal_mask(n_keys)[n_keys - n_new :], float("-inf"))
    context = torch.softmax(scores, dim=-1) @ latents[:, None]  # (B, H, T, d_latent)
    output = torch.einsum("bhtc,hcd->btd", context, w_uv @ w_o)
    ### END SOLUTION
    return output


# %%
check("mla_absorbed_step", mla_absorbed_step)

# %% [markdown]
# Done? Run `attention-course grade exercises/13_modern_kv_caches.ipynb` for the score, or go back to the
# [lesson](../notebooks/13_modern_kv_caches.ipynb).
