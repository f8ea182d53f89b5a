"""Correct code spelled differently from the solution must PASS.

For every exercise, at least two correct implementations that differ from the solution in the ways
learners differ (einsum instead of @, torch.where instead of masked_fill, float64 inside and cast
back, other helpers, a loop instead of broadcasting, positional Triton arguments, masking rows whose
output the exercise leaves undefined, ...). Each is graded in-process with ``run_check``; a sample is
also pasted into a copy of its solution notebook and graded by the command-line grader.

Every function here is self-contained (torch, math, attention_course only) so that its source can be
pasted into a notebook.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import nbformat
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from grading_helpers import SOLUTIONS, function_source, with_replacement
from test_flash_backward_exercise import _key_tiles_outer, _prescaled_lists
from test_lesson13_exercises import (
    mla_concatenated,
    mla_naive,
    paged_with_loop,
    paged_with_reshape,
    rolling_by_token_table,
    rolling_with_roll,
)

import attention_course as ac
from attention_course.grading import Case, Exercise, Status, all_exercises, get_exercise, run_check
from attention_course.grading.grade import grade_notebooks
from attention_course.triton_flash import triton

# ---------------------------------------------------------------- lesson 02


def qkv_einsum(x, w_q, w_k, w_v):
    return tuple(torch.einsum("...ld,de->...le", x, w) for w in (w_q, w_k, w_v))


def qkv_linear(x, w_q, w_k, w_v):
    q = F.linear(x, w_q.T)
    k = F.linear(x, w_k.t())
    v = torch.matmul(x, w_v)
    return q, k, v


def scores_einsum(q, k):
    return torch.einsum("...id,...jd->...ij", q, k)


def scores_mt(q, k):
    return torch.matmul(q, k.mT)


def scores_swapaxes(q, k):
    return q @ k.swapaxes(-1, -2)


# ---------------------------------------------------------------- lesson 03


def scaled_pow(q, k, scale=None):
    if scale is None:
        scale = q.size(-1) ** -0.5
    return torch.matmul(q, k.mT) * scale


def scaled_divide(q, k, scale=None):
    scores = q @ k.transpose(-1, -2)
    return scores / math.sqrt(k.shape[-1]) if scale is None else scores * scale


def scaled_float64_inside(q, k, scale=None):
    factor = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return (torch.einsum("...id,...jd->...ij", q.double(), k.double()) * factor).to(q.dtype)


# ---------------------------------------------------------------- lesson 04


def softmax_float64_inside(x, dim=-1, temperature=1.0):
    z = x.double() / temperature
    z = z - z.max(dim=dim, keepdim=True).values
    e = z.exp()
    return (e / e.sum(dim=dim, keepdim=True)).to(x.dtype)


def softmax_logsumexp(x, dim=-1, temperature=1.0):
    z = x / temperature
    return torch.exp(z - torch.logsumexp(z, dim=dim, keepdim=True))


def softmax_movedim(x, dim=-1, temperature=1.0):
    z = x.movedim(dim, -1) / temperature
    z = z - z.amax(-1).unsqueeze(-1)
    e = torch.exp(z)
    return (e / e.sum(-1).unsqueeze(-1)).movedim(-1, dim)


def softmax_torch(x, dim=-1, temperature=1.0):
    return torch.softmax(x / temperature, dim=dim)


# ---------------------------------------------------------------- lesson 05


def causal_arange(n_queries, n_keys=None):
    if n_keys is None:
        n_keys = n_queries
    return torch.arange(n_keys)[None, :] <= torch.arange(n_queries)[:, None]


def causal_tril_bool(n_queries, n_keys=None):
    return torch.tril(torch.ones(n_queries, n_keys or n_queries)).bool()


def causal_not_triu(n_queries, n_keys=None):
    n_keys = n_queries if n_keys is None else n_keys
    return ~torch.ones(n_queries, n_keys, dtype=torch.bool).triu(diagonal=1)


def padding_unsqueeze(lengths, max_len=None):
    if max_len is None:
        max_len = lengths.max().item()
    return torch.arange(max_len).unsqueeze(0) < lengths.unsqueeze(1)


def padding_loop(lengths, max_len=None):
    width = int(max(lengths)) if max_len is None else max_len
    return torch.stack([torch.arange(width) < int(n) for n in lengths])


def masked_where(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = torch.where(mask, scores, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    weights = torch.where(torch.isnan(weights), torch.zeros_like(weights), weights)
    return weights @ v, weights


def masked_course_softmax(q, k, v, mask=None):
    scores = torch.einsum("...id,...jd->...ij", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(mask.logical_not(), -math.inf)
    weights = ac.softmax(scores, dim=-1)
    return torch.einsum("...ij,...jd->...id", weights, v), weights


def masked_float64_inside(q, k, v, mask=None):
    scores = q.double() @ k.double().mT / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.nan_to_num(scores.softmax(-1), nan=0.0)
    return (weights @ v.double()).to(v.dtype), weights.to(q.dtype)


# ---------------------------------------------------------------- lesson 06


def split_view_permute(x, n_heads):
    b, n, d = x.shape
    return x.view(b, n, n_heads, -1).permute(0, 2, 1, 3)


def split_chunks(x, n_heads):
    return torch.stack(x.chunk(n_heads, dim=-1), dim=1)


def split_unflatten(x, n_heads):
    return x.unflatten(-1, (n_heads, -1)).transpose(1, 2)


def merge_flatten(x):
    return x.permute(0, 2, 1, 3).flatten(start_dim=2)


def merge_cat(x):
    return torch.cat(x.unbind(dim=1), dim=-1)


def merge_contiguous_view(x):
    b, h, n, d = x.shape
    return x.transpose(1, 2).contiguous().view(b, n, h * d)


def mha_einsum(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    batch, length, d_model = query.shape
    n_keys = key.shape[1]
    d_head = d_model // n_heads

    def linear(x, w, b):
        y = torch.einsum("bld,de->ble", x, w)
        return y if b is None else y + b

    q = linear(query, w_q, b_q).reshape(batch, length, n_heads, d_head).transpose(1, 2)
    k = linear(key, w_k, b_k).reshape(batch, n_keys, n_heads, d_head).transpose(1, 2)
    v = linear(value, w_v, b_v).reshape(batch, n_keys, n_heads, d_head).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d_head)
    allowed = torch.ones(length, n_keys, dtype=torch.bool)
    if causal:
        allowed = allowed.tril()
    if mask is not None:
        allowed = allowed & mask
    weights = torch.nan_to_num(torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1), nan=0.0)
    out = (weights @ v).transpose(1, 2).reshape(batch, length, d_model)
    return linear(out, w_o, b_o), weights


def mha_head_loop(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    batch, length, d_model = query.shape
    n_keys = key.shape[1]
    d_head = d_model // n_heads
    q_all = query @ w_q + (0 if b_q is None else b_q)
    k_all = key @ w_k + (0 if b_k is None else b_k)
    v_all = value @ w_v + (0 if b_v is None else b_v)
    allowed = torch.ones(batch, n_heads, length, n_keys, dtype=torch.bool)
    if mask is not None:
        allowed = allowed & mask
    if causal:
        allowed = allowed & ac.causal_mask(length, n_keys)
    outputs, weights = [], []
    for h in range(n_heads):
        cols = slice(h * d_head, (h + 1) * d_head)
        out, w = ac.masked_attention(q_all[..., cols], k_all[..., cols], v_all[..., cols], allowed[:, h])
        outputs.append(out)
        weights.append(w)
    merged = torch.cat(outputs, dim=-1)
    result = merged @ w_o if b_o is None else merged @ w_o + b_o
    return result, torch.stack(weights, dim=1)


# ---------------------------------------------------------------- lesson 07


def cross_via_mha(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    mask = None if encoder_mask is None else encoder_mask.unsqueeze(1).unsqueeze(2)
    return ac.multi_head_attention(
        decoder_states, encoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, mask=mask
    )


def cross_manual(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    batch, n_dec, d_model = decoder_states.shape
    n_enc = encoder_states.shape[1]
    d_head = d_model // n_heads
    q = torch.einsum("btd,de->bte", decoder_states, w_q).reshape(batch, n_dec, n_heads, d_head).permute(0, 2, 1, 3)
    k = torch.einsum("bsd,de->bse", encoder_states, w_k).reshape(batch, n_enc, n_heads, d_head).permute(0, 2, 1, 3)
    v = torch.einsum("bsd,de->bse", encoder_states, w_v).reshape(batch, n_enc, n_heads, d_head).permute(0, 2, 1, 3)
    scores = torch.einsum("bhtd,bhsd->bhts", q, k) * d_head**-0.5
    if encoder_mask is not None:
        scores = torch.where(encoder_mask[:, None, None, :], scores, torch.tensor(float("-inf"), dtype=scores.dtype))
    weights = scores.softmax(dim=-1)
    out = torch.einsum("bhts,bhsd->bhtd", weights, v).permute(0, 2, 1, 3).reshape(batch, n_dec, d_model)
    return out @ w_o, weights


# ---------------------------------------------------------------- lesson 08


def table_float32_exp_log(n_positions, d_model, base=10000.0):
    position = torch.arange(n_positions, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(base) / d_model))
    table = torch.zeros(n_positions, d_model)
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term)
    return table


def table_python_loops(n_positions, d_model, base=10000.0):
    rows = []
    for p in range(n_positions):
        row = []
        for i in range(0, d_model, 2):
            angle = p / base ** (i / d_model)
            row += [math.sin(angle), math.cos(angle)]
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float32).reshape(n_positions, d_model)


def rope_chunk(x, positions=None, base=10000.0):
    n, d = x.shape[-2], x.shape[-1]
    if positions is None:
        positions = torch.arange(n)
    inv_freq = 1.0 / (base ** (torch.arange(0, d, 2).float() / d))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * emb.cos().to(x.dtype) + rotated * emb.sin().to(x.dtype)


def rope_float64_pairs(x, positions=None, base=10000.0):
    n, d = x.shape[-2:]
    half = d // 2
    pos = torch.arange(n, dtype=torch.float64) if positions is None else positions.double()
    angles = torch.einsum("l,f->lf", pos, base ** (-2.0 * torch.arange(half, dtype=torch.float64) / d))
    cos, sin = angles.cos(), angles.sin()
    xd = x.double()
    first, second = xd[..., :half], xd[..., half:]
    out = torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)
    return out.to(x.dtype)


# ---------------------------------------------------------------- lesson 09


def cached_repeat_heads(q_new, k_new, v_new, k_cache, v_cache, length):
    n_new = q_new.shape[2]
    pos = torch.arange(length, length + n_new)
    q = ac.apply_rope(q_new, pos)
    keys = torch.cat((k_cache[:, :, :length], ac.apply_rope(k_new, pos)), dim=2)
    values = torch.cat((v_cache[:, :, :length], v_new), dim=2)
    group = q.shape[1] // keys.shape[1]
    allowed = torch.arange(length + n_new)[None, :] <= (length + torch.arange(n_new))[:, None]
    out = ac.scaled_dot_product_attention(
        q, keys.repeat_interleave(group, dim=1), values.repeat_interleave(group, dim=1), allowed
    )
    return out, keys, values


def cached_write_when_room(q_new, k_new, v_new, k_cache, v_cache, length):
    """Appends by writing into the preallocated cache when it has room (as a serving engine does)."""
    from attention_course.kv_cache import grouped_query_attention

    t = q_new.shape[-2]
    positions = torch.arange(length, length + t)
    k_rotated = ac.apply_rope(k_new, positions)
    if k_cache.shape[-2] >= length + t and not k_cache.requires_grad:
        k_cache[:, :, length : length + t] = k_rotated
        v_cache[:, :, length : length + t] = v_new
        keys, values = k_cache[:, :, : length + t], v_cache[:, :, : length + t]
    else:  # a growing cache (no room), or a leaf that autograd must not see written
        keys = torch.cat([k_cache[:, :, :length], k_rotated], dim=2)
        values = torch.cat([v_cache[:, :, :length], v_new], dim=2)
    mask = ac.causal_mask(length + t)[length:]
    return grouped_query_attention(ac.apply_rope(q_new, positions), keys, values, mask), keys, values


def cached_torch_sdpa(q_new, k_new, v_new, k_cache, v_cache, length):
    t = q_new.shape[-2]
    positions = length + torch.arange(t)
    q = ac.apply_rope(q_new, positions)
    k = ac.apply_rope(k_new, positions)
    keys = torch.cat([k_cache.narrow(2, 0, length), k], dim=-2)
    values = torch.cat([v_cache.narrow(2, 0, length), v_new], dim=-2)
    repeats = q.shape[1] // keys.shape[1]
    mask = ac.causal_mask(length + t)[length:]
    out = F.scaled_dot_product_attention(
        q, keys.repeat_interleave(repeats, 1), values.repeat_interleave(repeats, 1), attn_mask=mask
    )
    return out, keys, values


# ---------------------------------------------------------------- lesson 10


def window_triu_tril(n, window, causal=False):
    band = torch.ones(n, n, dtype=torch.bool).triu(-window).tril(window)
    return band.tril() if causal else band


def window_loops(n, window, causal=False):
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(n):
            mask[i, j] = abs(i - j) <= window and (not causal or j <= i)
    return mask


def global_from_window(n, window, global_tokens, causal=False):
    from attention_course.sparse import sliding_window_mask

    mask = sliding_window_mask(n, window)
    for g in global_tokens:
        mask[g, :] = True
        mask[:, g] = True
    return mask & torch.ones(n, n, dtype=torch.bool).tril() if causal else mask


def global_where(n, window, global_tokens, causal=False):
    i = torch.arange(n).unsqueeze(1)
    j = torch.arange(n).unsqueeze(0)
    g = torch.tensor([t in set(global_tokens) for t in range(n)])
    allowed = torch.where(g[:, None] | g[None, :], True, (i - j).abs() <= window)
    if causal:
        allowed = allowed & (j <= i)
    return allowed


def block_sparse_tile_lists(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    n_q, n_k = q.shape[-2], k.shape[-2]
    outs = []
    for qb in range(layout.shape[0]):
        rows = torch.arange(qb * block_size, min(n_q, (qb + 1) * block_size))
        scores, values = [], []
        for kb in range(layout.shape[1]):
            if not layout[qb, kb]:
                continue
            cols = torch.arange(kb * block_size, min(n_k, (kb + 1) * block_size))
            s = q[..., rows, :] @ k[..., cols, :].transpose(-1, -2) * scale
            ok = torch.ones(len(rows), len(cols), dtype=torch.bool)
            if causal:
                ok &= cols[None, :] <= rows[:, None]
            if mask_fn is not None:
                ok &= mask_fn(rows[:, None], cols[None, :])
            scores.append(s.masked_fill(~ok, float("-inf")))
            values.append(v[..., cols, :])
        if not scores:
            outs.append(q.new_zeros(*q.shape[:-2], len(rows), v.shape[-1]))
            continue
        weights = ac.softmax(torch.cat(scores, dim=-1), dim=-1)
        outs.append(weights @ torch.cat(values, dim=-2))
    return torch.cat(outs, dim=-2)


def block_sparse_gather_where(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    if scale is None:
        scale = 1 / math.sqrt(q.size(-1))
    result = []
    for qb, row in enumerate(layout):
        q_idx = torch.arange(qb * block_size, min((qb + 1) * block_size, q.size(-2)))
        key_in_tile = row.repeat_interleave(block_size)[: k.size(-2)]
        k_idx = key_in_tile.nonzero().squeeze(-1)
        s = q[..., q_idx, :] @ k[..., k_idx, :].transpose(-2, -1) * scale
        allowed = torch.ones(len(q_idx), len(k_idx), dtype=torch.bool)
        if causal:
            allowed = allowed & (k_idx.unsqueeze(0) <= q_idx.unsqueeze(1))
        if mask_fn is not None:
            allowed = allowed & mask_fn(q_idx.unsqueeze(1), k_idx.unsqueeze(0))
        w = torch.softmax(s.masked_fill(~allowed, float("-inf")), dim=-1)
        w = torch.where(allowed, w, torch.zeros_like(w))
        result.append(w @ v[..., k_idx, :])
    return torch.cat(result, dim=-2)


# ---------------------------------------------------------------- lesson 11


def online_first_block_init(blocks):
    m = l = None
    for block in blocks:
        block_max = block.amax(dim=-1, keepdim=True)
        if m is None:
            m, l = block_max, torch.exp(block - block_max).sum(dim=-1, keepdim=True)
            continue
        new = torch.maximum(m, block_max)
        l = l * torch.exp(m - new) + torch.exp(block - new).sum(dim=-1, keepdim=True)
        m = new
    return torch.cat([torch.exp(block - m) / l for block in blocks], dim=-1)


def online_float64_logaddexp(blocks):
    lse = torch.full(blocks[0].shape[:-1] + (1,), -math.inf, dtype=torch.float64)
    for block in blocks:
        lse = torch.logaddexp(lse, torch.logsumexp(block.double(), dim=-1, keepdim=True))
    return torch.cat([torch.exp(block.double() - lse) for block in blocks], dim=-1).to(blocks[0].dtype)


def tiled_where_continue(q, k, v, causal=False, block_q=512, block_k=256):
    scale = q.shape[-1] ** -0.5
    n_q, n_k = q.shape[-2], k.shape[-2]
    out_tiles, lse_tiles = [], []
    for start in range(0, n_q, block_q):
        qt = q[..., start : start + block_q, :]
        q_pos = torch.arange(start, start + qt.shape[-2])
        run_max = torch.full((*qt.shape[:-1], 1), -math.inf)
        run_sum = torch.zeros_like(run_max)
        acc = torch.zeros(*qt.shape[:-1], v.shape[-1])
        for kstart in range(0, n_k, block_k):
            if causal and kstart > q_pos.max():
                continue
            kt, vt = k[..., kstart : kstart + block_k, :], v[..., kstart : kstart + block_k, :]
            s = torch.einsum("...id,...jd->...ij", qt, kt) * scale
            if causal:
                k_pos = torch.arange(kstart, kstart + kt.shape[-2])
                s = torch.where(k_pos[None, :] <= q_pos[:, None], s, torch.tensor(-math.inf))
            new_max = torch.maximum(run_max, s.max(dim=-1, keepdim=True).values)
            correction = torch.exp(run_max - new_max)
            p = torch.exp(s - new_max)
            run_sum = run_sum * correction + p.sum(-1, keepdim=True)
            acc = acc * correction + p @ vt
            run_max = new_max
        out_tiles.append(acc / run_sum)
        lse_tiles.append(run_max.squeeze(-1) + run_sum.squeeze(-1).log())
    return torch.cat(out_tiles, dim=-2), torch.cat(lse_tiles, dim=-1)


def tiled_bounded_loop(q, k, v, causal=False, block_q=512, block_k=256):
    d = q.shape[-1]
    outputs, lses = [], []
    for i in range(0, q.shape[-2], block_q):
        q_tile = q[..., i : i + block_q, :]
        last_query = i + q_tile.shape[-2] - 1
        end = min(k.shape[-2], last_query + 1) if causal else k.shape[-2]
        m = torch.full(q_tile.shape[:-1], float("-inf"))
        l = torch.zeros(q_tile.shape[:-1])
        acc = torch.zeros(*q_tile.shape[:-1], v.shape[-1])
        for j in range(0, end, block_k):
            s = q_tile @ k[..., j : j + block_k, :].transpose(-2, -1) / math.sqrt(d)
            if causal:
                future = torch.arange(j, j + s.shape[-1])[None, :] > torch.arange(i, i + s.shape[-2])[:, None]
                s = s.masked_fill(future, float("-inf"))
            m_new = torch.maximum(m, s.amax(-1))
            alpha = torch.exp(m - m_new)
            p = torch.exp(s - m_new[..., None])
            l = alpha * l + p.sum(-1)
            acc = alpha[..., None] * acc + p @ v[..., j : j + block_k, :]
            m = m_new
        outputs.append(acc / l[..., None])
        lses.append(m + torch.log(l))
    return torch.cat(outputs, -2), torch.cat(lses, -1)


# ---------------------------------------------------------------- lesson 12


def encoder_attention_masks_padded_queries(hidden, layer, key_mask, n_heads):
    q = ac.split_heads(hidden @ layer.w_q + layer.b_q, n_heads)
    k = ac.split_heads(hidden @ layer.w_k + layer.b_k, n_heads)
    v = ac.split_heads(hidden @ layer.w_v + layer.b_v, n_heads)
    both_real = key_mask[:, None, None, :] & key_mask[:, None, :, None]  # padded queries see nothing either
    heads, weights = ac.masked_attention(q, k, v, both_real)
    return ac.merge_heads(heads) @ layer.w_o + layer.b_o, weights


def encoder_attention_einsum(hidden, layer, key_mask, n_heads):
    batch, length, d_model = hidden.shape
    d_head = d_model // n_heads

    def heads(w, b):
        return torch.einsum("bld,de->ble", hidden, w).add(b).view(batch, length, n_heads, d_head).transpose(1, 2)

    q, k, v = heads(layer.w_q, layer.b_q), heads(layer.w_k, layer.b_k), heads(layer.w_v, layer.b_v)
    scores = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(d_head)
    scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1)
    out = torch.einsum("bhij,bhjd->bhid", weights, v).transpose(1, 2).reshape(batch, length, d_model)
    return out @ layer.w_o + layer.b_o, weights


def feed_forward_linear(hidden, layer):
    inner = F.linear(hidden, layer.w_ff1.T, layer.b_ff1)
    return F.linear(F.gelu(inner), layer.w_ff2.T, layer.b_ff2)


def feed_forward_erf(hidden, layer):
    x = hidden @ layer.w_ff1 + layer.b_ff1
    x = 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    return x @ layer.w_ff2 + layer.b_ff2


def pooling_where(hidden, key_mask):
    summed = torch.where(key_mask[..., None], hidden, 0.0).sum(dim=1)
    mean = summed / key_mask.sum(dim=1, keepdim=True)
    return mean / mean.norm(dim=-1, keepdim=True)


def pooling_einsum(hidden, key_mask):
    weights = key_mask.to(hidden.dtype)
    mean = torch.einsum("bl,bld->bd", weights, hidden) / weights.sum(-1, keepdim=True).clamp(min=1e-9)
    return F.normalize(mean, p=2, dim=1)


def pooling_loop(hidden, key_mask):
    rows = [hidden[b][key_mask[b]].mean(dim=0) for b in range(hidden.shape[0])]
    return F.normalize(torch.stack(rows), dim=-1)


# ---------------------------------------------------------------- lesson 14


def induction_loop(attention, tokens, period):
    batch, n_heads, length, _ = attention.shape
    total = torch.zeros(n_heads, dtype=attention.dtype)
    count = 0
    for b in range(batch):
        for t in range(period, length):
            if tokens[b, t] == tokens[b, t - period]:
                total = total + attention[b, :, t, t - period + 1]
                count += 1
    if count == 0:
        raise ValueError("no repeated token: nothing to score")
    return total / count


def induction_gather(attention, tokens, period):
    t = torch.arange(period, tokens.shape[1])
    repeated = tokens[:, period:] == tokens[:, :-period]
    if not repeated.any():
        raise ValueError("no repeated token")
    weights = attention[:, :, t, t - period + 1]
    return (weights * repeated[:, None]).sum(dim=(0, 2)) / repeated.sum()


def ablated_keep_vector(q, k, v, o_weight, head):
    length = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    keep = torch.ones(q.shape[1], dtype=out.dtype)
    keep[head] = 0.0
    out = out * keep[None, :, None, None]
    batch, n_heads, length, d_head = out.shape
    return out.transpose(1, 2).reshape(batch, length, n_heads * d_head) @ o_weight.T


def ablated_sum_of_heads(q, k, v, o_weight, head):
    heads = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    batch, n_heads, length, d_head = heads.shape
    per_head = o_weight.reshape(o_weight.shape[0], n_heads, d_head)
    out = torch.zeros(batch, length, o_weight.shape[0], dtype=q.dtype)
    for h in range(n_heads):
        if h != head % n_heads:
            out = out + heads[:, h] @ per_head[:, h].T
    return out


def rolling_in_place(q_new, k_new, v_new, k_cache, v_cache, position, n_sinks, scheme="absolute"):
    """Writes the new token into the given buffers in place and returns them."""
    from attention_course.kv_cache import grouped_query_attention

    window = k_cache.shape[-2] - n_sinks
    slot = position if position < n_sinks else n_sinks + (position - n_sinks) % window
    if scheme == "absolute":
        q_new = ac.apply_rope(q_new, torch.tensor([position]))
        k_new = ac.apply_rope(k_new, torch.tensor([position]))
    k_cache[:, :, slot] = k_new[:, :, 0]
    v_cache[:, :, slot] = v_new[:, :, 0]
    n = min(position + 1, k_cache.shape[-2])
    if position < k_cache.shape[-2]:
        order = torch.arange(n)
    else:  # sinks, then the window from its oldest slot (the one after the newest)
        order = torch.cat([torch.arange(n_sinks), n_sinks + (slot + 1 - n_sinks + torch.arange(window)) % window])
    keys, values = k_cache[:, :, order], v_cache[:, :, order]
    if scheme == "in_cache":
        keys = ac.apply_rope(keys)
        q_new = ac.apply_rope(q_new, torch.tensor([n - 1]))
    return grouped_query_attention(q_new, keys, values), k_cache, v_cache


def paged_in_place(pool, block_table, ref_counts, length, new, spare_block):
    """Copy-on-write and the write go into the given pool and block table, which it returns."""
    size = pool.shape[2]
    index = length // size
    if ref_counts[block_table[index]] > 1:
        pool[spare_block] = pool[block_table[index]]
        block_table[index] = spare_block
    pool[block_table[index], :, length % size] = new
    positions = torch.arange(length + 1)
    rows = pool[block_table[positions // size], :, positions % size]  # (length + 1, heads, d_head)
    return rows.transpose(0, 1), pool, block_table


VARIANTS: dict[str, tuple[Callable[..., Any], ...]] = {
    "qkv_projection": (qkv_einsum, qkv_linear),
    "attention_scores": (scores_einsum, scores_mt, scores_swapaxes),
    "scaled_attention_scores": (scaled_pow, scaled_divide, scaled_float64_inside),
    "softmax": (softmax_float64_inside, softmax_logsumexp, softmax_movedim, softmax_torch),
    "causal_mask": (causal_arange, causal_tril_bool, causal_not_triu),
    "padding_mask": (padding_unsqueeze, padding_loop),
    "masked_attention": (masked_where, masked_course_softmax, masked_float64_inside),
    "split_heads": (split_view_permute, split_chunks, split_unflatten),
    "merge_heads": (merge_flatten, merge_cat, merge_contiguous_view),
    "multi_head_attention": (mha_einsum, mha_head_loop),
    "cross_attention": (cross_via_mha, cross_manual),
    "sinusoidal_table": (table_float32_exp_log, table_python_loops),
    "apply_rope": (rope_chunk, rope_float64_pairs),
    "cached_attention_step": (cached_repeat_heads, cached_torch_sdpa, cached_write_when_room),
    "sliding_window_mask": (window_triu_tril, window_loops),
    "global_local_mask": (global_from_window, global_where),
    "block_sparse_attention": (block_sparse_tile_lists, block_sparse_gather_where),
    "online_softmax": (online_first_block_init, online_float64_logaddexp),
    "tiled_attention": (tiled_where_continue, tiled_bounded_loop),
    "encoder_self_attention": (encoder_attention_masks_padded_queries, encoder_attention_einsum),
    "encoder_feed_forward": (feed_forward_linear, feed_forward_erf),
    "mean_pooling": (pooling_where, pooling_einsum, pooling_loop),
    "induction_score": (induction_loop, induction_gather),
    "ablated_attention": (ablated_keep_vector, ablated_sum_of_heads),
    # written next to their exercises' other tests
    "tiled_attention_backward": (_key_tiles_outer, _prescaled_lists),
    "rolling_attention_step": (rolling_by_token_table, rolling_with_roll, rolling_in_place),
    "paged_write_and_gather": (paged_with_loop, paged_with_reshape, paged_in_place),
    "mla_absorbed_step": (mla_concatenated, mla_naive),
}

# Variants that are right only because the exercise leaves something undefined, which the grader
# ignores through a Case contract (here: `select`, the padded query rows' outputs).
NEEDS_SELECT = {"encoder_attention_masks_padded_queries"}


def _runner_enforces_select() -> bool:
    """Whether run_check applies Case.select (it does once the grader's runner is merged)."""
    probe = Exercise(
        name="probe_select",
        lesson="probe",
        reference=lambda x: x * 2,
        cases=lambda: [Case((torch.ones(2),), select=lambda out: out[:1])],
    )
    return run_check(probe, lambda x: torch.tensor([2.0, 5.0])).passed


if triton is not None:
    import triton.language as tl

    @triton.jit
    def flash_positional(
        q_ptr,
        k_ptr,
        v_ptr,
        out_ptr,
        stride_qh,
        stride_qn,
        stride_qd,
        stride_kh,
        stride_kn,
        stride_kd,
        stride_vh,
        stride_vn,
        stride_vd,
        stride_oh,
        stride_on,
        stride_od,
        n_queries,
        n_keys,
        qk_scale_log2e,
        D_HEAD: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        CAUSAL: tl.constexpr,
    ):
        pid = tl.program_id(axis=0)
        h = tl.program_id(axis=1)
        offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, D_HEAD)
        row_ok = offs_m[:, None] < n_queries
        q = tl.load(q_ptr + h * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd, row_ok, 0.0)
        m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - float("inf")
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, D_HEAD], dtype=tl.float32)
        hi = tl.minimum((pid + 1) * BLOCK_M, n_keys) if CAUSAL else n_keys
        for start_n in range(0, hi, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            key_ok = offs_n < n_keys
            k = tl.load(
                k_ptr + h * stride_kh + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd, key_ok[None, :], 0.0
            )
            v = tl.load(
                v_ptr + h * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, key_ok[:, None], 0.0
            )
            s = tl.dot(q, k) * qk_scale_log2e
            keep = key_ok[None, :]
            if CAUSAL:
                keep = keep & (offs_n[None, :] <= offs_m[:, None])
            s = tl.where(keep, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            correction = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * correction + tl.sum(p, 1)
            acc = acc * correction[:, None]
            acc += tl.dot(p.to(v.dtype), v)
            m_i = m_new
        tl.store(
            out_ptr + h * stride_oh + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od,
            (acc / l_i[:, None]).to(out_ptr.dtype.element_ty),
            row_ok,
        )

    @triton.jit
    def flash_natural_exp(
        q_ptr,
        k_ptr,
        v_ptr,
        out_ptr,
        stride_qh,
        stride_qn,
        stride_qd,
        stride_kh,
        stride_kn,
        stride_kd,
        stride_vh,
        stride_vn,
        stride_vd,
        stride_oh,
        stride_on,
        stride_od,
        n_queries,
        n_keys,
        qk_scale_log2e,
        D_HEAD: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        CAUSAL: tl.constexpr,
    ):
        start_m = tl.program_id(0)
        head = tl.program_id(1)
        rows = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
        d = tl.arange(0, D_HEAD)
        q = tl.load(
            q_ptr + head * stride_qh + rows[:, None] * stride_qn + d[None, :] * stride_qd,
            mask=(rows[:, None] < n_queries) & (d[None, :] < D_HEAD),
            other=0.0,
        )
        scale = qk_scale_log2e * 0.6931471805599453  # back to the natural base: use tl.exp
        m = tl.full([BLOCK_M], float("-inf"), tl.float32)
        total = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D_HEAD], tl.float32)
        end = n_keys
        if CAUSAL:
            end = tl.minimum(end, (start_m + 1) * BLOCK_M)
        for start in range(0, end, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            k = tl.load(
                k_ptr + head * stride_kh + cols[:, None] * stride_kn + d[None, :] * stride_kd,
                mask=cols[:, None] < n_keys,
                other=0.0,
            )
            v = tl.load(
                v_ptr + head * stride_vh + cols[:, None] * stride_vn + d[None, :] * stride_vd,
                mask=cols[:, None] < n_keys,
                other=0.0,
            )
            s = tl.dot(q, tl.trans(k)) * scale
            s = tl.where(cols[None, :] < n_keys, s, float("-inf"))
            if CAUSAL:
                s = tl.where(cols[None, :] <= rows[:, None], s, float("-inf"))
            new_m = tl.maximum(m, tl.max(s, axis=1))
            p = tl.exp(s - new_m[:, None])
            alpha = tl.exp(m - new_m)
            total = alpha * total + tl.sum(p, axis=1)
            acc = alpha[:, None] * acc + tl.dot(p.to(v.dtype), v)
            m = new_m
        tl.store(
            out_ptr + head * stride_oh + rows[:, None] * stride_on + d[None, :] * stride_od,
            (acc / total[:, None]).to(out_ptr.dtype.element_ty),
            mask=rows[:, None] < n_queries,
        )

    VARIANTS["flash_attention_kernel"] = (flash_positional, flash_natural_exp)

CASES = [(name, variant) for name, variants in VARIANTS.items() for variant in variants]


def _id(value: object) -> str:
    return getattr(value, "__name__", None) or getattr(getattr(value, "fn", None), "__name__", str(value))


# The exercises of issue 16 (lessons 02-12, 11b): each must have two variants here. Exercises added
# since by other lessons are listed as expected failures until someone writes theirs.
ISSUE_16 = {
    "qkv_projection",
    "attention_scores",
    "scaled_attention_scores",
    "softmax",
    "causal_mask",
    "padding_mask",
    "masked_attention",
    "split_heads",
    "merge_heads",
    "multi_head_attention",
    "cross_attention",
    "sinusoidal_table",
    "apply_rope",
    "cached_attention_step",
    "sliding_window_mask",
    "global_local_mask",
    "block_sparse_attention",
    "online_softmax",
    "tiled_attention",
    "flash_attention_kernel",
    "encoder_self_attention",
    "encoder_feed_forward",
    "mean_pooling",
}


@pytest.mark.parametrize("exercise", all_exercises(), ids=lambda e: e.name)
def test_every_exercise_has_two_variants(exercise) -> None:
    if exercise.name not in ISSUE_16 and exercise.name not in VARIANTS:
        pytest.xfail(f"{exercise.name} ({exercise.lesson}, added after issue 16) has no correct variants here yet")
    assert len(VARIANTS.get(exercise.name, ())) >= 2, f"{exercise.name}: fewer than two correct variants"


@pytest.mark.parametrize(("exercise_name", "variant"), CASES, ids=_id)
def test_correct_variant_passes(exercise_name: str, variant: Callable[..., Any]) -> None:
    result = run_check(get_exercise(exercise_name), variant)
    if not result.passed and _id(variant) in NEEDS_SELECT and not _runner_enforces_select():
        pytest.xfail("needs Case.select, which the runner does not apply yet")
    assert result.status is Status.PASSED, f"{_id(variant)}: {result.message}"


# A sample graded the way a learner's notebook is: pasted into a copy of the solution notebook.
IN_NOTEBOOK = [
    ("softmax", softmax_float64_inside),
    ("masked_attention", masked_where),
    ("multi_head_attention", mha_head_loop),
    ("block_sparse_attention", block_sparse_tile_lists),
    ("tiled_attention", tiled_where_continue),
    ("mean_pooling", pooling_where),
    ("encoder_self_attention", encoder_attention_masks_padded_queries),
]
if triton is not None:
    IN_NOTEBOOK.append(("flash_attention_kernel", flash_positional))


@pytest.fixture(scope="module")
def graded_variants(tmp_path_factory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("variants")
    paths = {}
    for name, variant in IN_NOTEBOOK:
        lesson = get_exercise(name).lesson
        source = function_source(variant, name)
        target = folder / f"{name}__{_id(variant)}.ipynb"
        nbformat.write(with_replacement(SOLUTIONS / f"{lesson}.ipynb", name, source), target)
        paths[target] = _id(variant)
    return {paths[grade.path]: grade for grade in grade_notebooks(list(paths))}


@pytest.mark.parametrize(("exercise_name", "variant"), IN_NOTEBOOK, ids=_id)
def test_correct_variant_passes_in_notebook(graded_variants, exercise_name: str, variant: Any) -> None:
    grade = graded_variants[_id(variant)]
    failed = [r.message for r in grade.results if not r.passed]
    if failed and _id(variant) in NEEDS_SELECT and not _runner_enforces_select():
        pytest.xfail("needs Case.select, which the runner does not apply yet")
    assert grade.results and not failed, failed
    assert exercise_name in {r.exercise for r in grade.results}


def test_masks_passed_by_position_count_as_masks() -> None:
    """The Triton check's "no mask=" rule reads argument positions, whatever the import spelling."""
    from attention_course.grading.triton_sandbox import unmasked_memory_ops

    header = (
        "import triton\nimport triton.language as tl\nfrom triton import language as lang\n"
        "from triton.language import load as tl_load, store\n"
    )
    masked = header + "\n".join(
        [
            "x = tl.load(p, m, 0.0)",
            "x = tl.load(p, mask=m)",
            "x = lang.load(p, m)",
            "x = triton.language.load(p, m)",
            "x = tl_load(p, m, other=0.0)",
            "tl.store(p, x, m)",
            "store(p, x, mask=m)",
            "x = tl.load(p, None, 0.0, (0, 1))",
            "x = tl.load(p, boundary_check=(0,))",
        ]
    )
    assert unmasked_memory_ops(masked) == []
    unmasked = header + "\n".join(
        [
            "x = tl.load(p)",
            "x = tl.load(p, mask=None)",
            "x = lang.load(p, other=0.0)",
            "tl.store(p, x)",
            "store(p, x, None)",
            "x = tl_load(p)",
            "x = triton.language.load(p, None)",
        ]
    )
    assert len(unmasked_memory_ops(unmasked)) == 7


def test_a_cache_written_in_place_must_hold_exactly_the_update() -> None:
    # Writing the new entries into a cache is allowed (the variants above); anything else written
    # into it, or into an input that is not a cache, is still refused.
    def wipes_the_prefix_too(q_new, k_new, v_new, k_cache, v_cache, length):
        out, keys, values = cached_write_when_room(q_new, k_new, v_new, k_cache, v_cache, length)
        keys, values = keys.clone(), values.clone()
        k_cache[:, :, :length] = 0.0
        return out, keys, values

    def shifts_the_query_in_place(q_new, k_new, v_new, k_cache, v_cache, length):
        q_new.add_(1.0)  # right numbers from q_new - 1, but q_new is not a cache
        return cached_write_when_room(q_new - 1.0, k_new, v_new, k_cache, v_cache, length)

    def writes_the_unrotated_keys(q_new, k_new, v_new, k_cache, v_cache, length):
        out, keys, values = cached_write_when_room(q_new, k_new, v_new, k_cache, v_cache, length)
        keys = keys.clone()
        t = q_new.shape[-2]
        if k_cache.shape[-2] >= length + t:
            k_cache[:, :, length : length + t] = k_new  # the cache must hold the keys after RoPE
        return out, keys, values

    exercise = get_exercise("cached_attention_step")
    for variant, expected in (
        (wipes_the_prefix_too, "wrote into argument 4 in place"),
        (writes_the_unrotated_keys, "wrote into argument 4 in place"),
    ):
        result = run_check(exercise, variant)
        assert result.status is Status.FAILED and expected in result.message, (variant.__name__, result.message)
    result = run_check(exercise, shifts_the_query_in_place)
    assert result.status is Status.FAILED and "changed its inputs in place" in result.message, result.message
