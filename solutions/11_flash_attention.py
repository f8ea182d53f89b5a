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
# # Exercise 11 · Flash-attention tiling
#
# Lesson: [11 flash attention](../notebooks/11_flash_attention.ipynb). Three functions, each
# followed by a check cell that says **PASS**, **TODO** (not done yet) or **FAIL** with a hint
# naming the likely mistake.
#
# Run `attention-course grade exercises/11_flash_attention.ipynb` in a terminal to grade the
# whole notebook.

# %%
import math

import torch

from attention_course.grading import check

_ = torch.manual_seed(0)  # the same random numbers on every run

# %% [markdown]
# ## 1. Online softmax
#
# The scores of one row arrive in blocks. Read them **once**, keeping a running maximum $m$ and
# a running sum $\ell = \sum e^{x - m}$ of what you have seen so far. When a block raises the
# maximum to $m' = \max(m, \max_{\text{block}} x)$:
#
# $$\ell \leftarrow \ell\, e^{m - m'} + \sum_{x \in \text{block}} e^{x - m'}, \qquad m \leftarrow m'.$$
#
# At the end, the weights of each block are $e^{x - m} / \ell$; concatenated, they must equal
# `torch.softmax(torch.cat(blocks, dim=-1), dim=-1)`.

# %%
def online_softmax(blocks: list[torch.Tensor]) -> torch.Tensor:
    """Softmax over the concatenation of `blocks`, with one running max and one running sum.

    blocks: a list of float tensors (..., n_b) sharing their leading dimensions.
    Returns (..., sum of n_b), the softmax of all the scores of each row.

    Hints: start with m = -inf and l = 0, both of shape (..., 1) (`torch.full(shape, float("-inf"))`);
    `block.amax(dim=-1, keepdim=True)` is the block's maximum; `torch.maximum(a, b)` is elementwise.
    """
    ### BEGIN SOLUTION
    m = torch.full(blocks[0].shape[:-1] + (1,), float("-inf"))
    l = torch.zeros_like(m)
    for block in blocks:
        m_new = torch.maximum(m, block.amax(dim=-1, keepdim=True))
        l = l * torch.exp(m - m_new) + torch.exp(block - m_new).sum(dim=-1, keepdim=True)
        m = m_new
    return torch.cat([torch.exp(block - m) for block in blocks], dim=-1) / l
    ### END SOLUTION


# %%
check("online_softmax", online_softmax)

# %% [markdown]
# ## 2. Tiled attention
#
# Cut the queries into tiles of `block_q` rows and the keys and values into tiles of `block_k`
# rows. For each query tile, start with $m = -\infty$, $\ell = 0$ and an output accumulator
# $o = 0$, and walk over the key tiles. With $S = Q_i K_j^\top / \sqrt{d_k}$ for one tile:
#
# $$m' = \max\big(m, \operatorname{rowmax} S\big), \quad P = e^{S - m'}, \quad \alpha = e^{m - m'},$$
# $$\ell \leftarrow \alpha\, \ell + \operatorname{rowsum} P, \qquad o \leftarrow \alpha\, o + P V_j, \qquad m \leftarrow m'.$$
#
# After the last key tile the query tile's output is $o / \ell$ and its log-sum-exp is
# $m + \log \ell$. Return both, for all queries: `(output (..., L, d_v), lse (..., L))`.
#
# With `causal=True`, query $i$ sees keys $j \le i$: skip the key tiles that start after the
# tile's last query, and set $S_{ij} = -\infty$ for $j > i$ in the tiles that straddle the diagonal.
# Never build the full `(L, S)` score matrix.

# %%
def tiled_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    block_q: int = 512,
    block_k: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact attention, one (block_q x block_k) tile of scores at a time.

    q: (..., L, d_k); k: (..., S, d_k); v: (..., S, d_v), float32, same leading dimensions.
    Returns output (..., L, d_v), equal to softmax(q k^T / sqrt(d_k)) v, and lse (..., L),
    the log-sum-exp of each query's scaled (and masked) scores.

    Hints: `q[..., i:i + block_q, :]` is a query tile (the last one may be shorter);
    `torch.arange(j, j + n)[None, :] > torch.arange(i, i + m)[:, None]` marks keys after their query;
    collect the tiles' results in lists and `torch.cat` them at the end.
    """
    ### BEGIN SOLUTION
    scale = 1 / math.sqrt(q.shape[-1])
    outputs, lses = [], []
    for i in range(0, q.shape[-2], block_q):
        q_tile = q[..., i:i + block_q, :] * scale  # (..., bq, d_k)
        rows = torch.arange(i, i + q_tile.shape[-2])[:, None]  # query positions (bq, 1)
        m = torch.full(q_tile.shape[:-1] + (1,), float("-inf"))  # (..., bq, 1)
        l = torch.zeros_like(m)
        acc = torch.zeros(q_tile.shape[:-1] + (v.shape[-1],))  # (..., bq, d_v)
        for j in range(0, k.shape[-2], block_k):
            if causal and j > rows[-1]:
                break  # this key tile and all later ones come after the tile's last query
            s = q_tile @ k[..., j:j + block_k, :].transpose(-2, -1)  # (..., bq, bk)
            if causal:
                s = s.masked_fill(torch.arange(j, j + s.shape[-1]) > rows, float("-inf"))
            m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
            p = torch.exp(s - m_new)
            alpha = torch.exp(m - m_new)
            l = alpha * l + p.sum(dim=-1, keepdim=True)
            acc = alpha * acc + p @ v[..., j:j + block_k, :]
            m = m_new
        outputs.append(acc / l)
        lses.append((m + torch.log(l)).squeeze(-1))
    return torch.cat(outputs, dim=-2), torch.cat(lses, dim=-1)
    ### END SOLUTION


# %%
check("tiled_attention", tiled_attention)

# %% [markdown]
# ## 3. The tiled backward pass (FlashAttention-2)
#
# The forward pass saved only `out` $= O$ and `lse` $= \mathrm{lse}$. Given the gradient of the
# loss with respect to the output, $dO$, compute $dQ$, $dK$, $dV$ tile by tile, never building the
# `(L, S)` matrix. First, once per query row:
#
# $$D_i = \sum_c dO_{ic}\, O_{ic}.$$
#
# Then for every query tile $i$ and key tile $j$ (the same tiles as the forward, with the same
# causal skipping and masking), with $s = 1/\sqrt{d_k}$:
#
# $$P = e^{s\,Q_i K_j^\top - \mathrm{lse}_i}, \quad dV_j \mathrel{+}= P^\top dO_i, \quad
#   dP = dO_i V_j^\top, \quad dS = P \odot (dP - D_i),$$
# $$dQ_i \mathrel{+}= s\, dS\, K_j, \qquad dK_j \mathrel{+}= s\, dS^\top Q_i.$$
#
# Return `(dq, dk, dv)`, shaped like `q`, `k` and `v`. The check compares them with autograd
# through PyTorch's `scaled_dot_product_attention`.

# %%
def tiled_attention_backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    grad_out: torch.Tensor,
    causal: bool = False,
    block_q: int = 64,
    block_k: int = 64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of attention's output with respect to q, k and v, one tile of scores at a time.

    q: (..., L, d_k); k: (..., S, d_k); v: (..., S, d_v); out: (..., L, d_v) and lse: (..., L) from the
    forward pass; grad_out: (..., L, d_v), the gradient of the loss with respect to out.
    Returns (dq, dk, dv), shaped like q, k and v.

    Hints: start from `torch.zeros_like(q)` etc. and add each tile's share into a slice,
    `dk[..., j:j + block_k, :] += ...`; `lse[..., i:i + block_q, None]` broadcasts over a tile's keys;
    the causal skipping and masking are the forward's.
    """
    ### BEGIN SOLUTION
    scale = 1 / math.sqrt(q.shape[-1])
    delta = (grad_out * out).sum(dim=-1, keepdim=True)  # D (..., L, 1)
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    for i in range(0, q.shape[-2], block_q):
        q_tile, do_tile = q[..., i:i + block_q, :], grad_out[..., i:i + block_q, :]
        rows = torch.arange(i, i + q_tile.shape[-2])[:, None]  # query positions (bq, 1)
        for j in range(0, k.shape[-2], block_k):
            if causal and j > rows[-1]:
                break  # this key tile and all later ones come after the tile's last query
            k_tile, v_tile = k[..., j:j + block_k, :], v[..., j:j + block_k, :]
            s = q_tile @ k_tile.transpose(-2, -1) * scale  # (..., bq, bk)
            if causal:
                s = s.masked_fill(torch.arange(j, j + s.shape[-1]) > rows, float("-inf"))
            p = torch.exp(s - lse[..., i:i + block_q, None])  # the forward's weights, recomputed
            dv[..., j:j + block_k, :] += p.transpose(-2, -1) @ do_tile
            dp = do_tile @ v_tile.transpose(-2, -1)  # (..., bq, bk)
            ds = p * (dp - delta[..., i:i + block_q, :])
            dq[..., i:i + block_q, :] += ds @ k_tile * scale
            dk[..., j:j + block_k, :] += ds.transpose(-2, -1) @ q_tile * scale
    return dq, dk, dv
    ### END SOLUTION


# %%
check("tiled_attention_backward", tiled_attention_backward)

# %% [markdown]
# Done? Lesson [11b](../notebooks/11b_flash_triton.ipynb) writes this loop as a Triton kernel,
# the way it runs on a GPU.
