"""Grader audit (lessons 07-10 and 12): learner code written from the exercise notebooks alone.

Mistakes a learner really writes must FAIL; correct code spelled the ways learners differ must PASS.
Each function is self-contained (torch, math, attention_course only), graded in-process with
``run_check`` as ``tests/test_grader_variants.py`` does. The catalogued mistakes (with their hints)
are covered by ``tests/test_grader_catalogue.py``; these are the learner-side spellings around them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

import attention_course as ac
from attention_course import (
    apply_rope,
    causal_mask,
    masked_attention,
    merge_heads,
    scaled_dot_product_attention,
    split_heads,
)
from attention_course.grading import Status, get_exercise, run_check
from attention_course.kv_cache import grouped_query_attention

# ---------------------------------------------------------------- lesson 07


# ---------------- mistakes
def ca_scale_d_model(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    q = ac.split_heads(decoder_states @ w_q, n_heads)
    k = ac.split_heads(encoder_states @ w_k, n_heads)
    v = ac.split_heads(encoder_states @ w_v, n_heads)
    scores = q @ k.transpose(-1, -2) / math.sqrt(decoder_states.shape[-1])
    if encoder_mask is not None:
        scores = scores.masked_fill(~encoder_mask[:, None, None, :], float("-inf"))
    weights = scores.softmax(-1)
    return ac.merge_heads(weights @ v) @ w_o, weights


def ca_swap_wk_wv(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    q = ac.split_heads(decoder_states @ w_q, n_heads)
    k = ac.split_heads(encoder_states @ w_v, n_heads)
    v = ac.split_heads(encoder_states @ w_k, n_heads)
    mask = None if encoder_mask is None else encoder_mask[:, None, None, :]
    out, weights = ac.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    return ac.merge_heads(out) @ w_o, weights


def ca_causal(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    q = ac.split_heads(decoder_states @ w_q, n_heads)
    k = ac.split_heads(encoder_states @ w_k, n_heads)
    v = ac.split_heads(encoder_states @ w_v, n_heads)
    T, S = q.shape[-2], k.shape[-2]
    mask = torch.ones(T, S, dtype=torch.bool).tril()
    if encoder_mask is not None:
        mask = mask & encoder_mask[:, None, None, :]
    out, weights = ac.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    return ac.merge_heads(out) @ w_o, weights


def ca_mask_inverted(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    q = ac.split_heads(decoder_states @ w_q, n_heads)
    k = ac.split_heads(encoder_states @ w_k, n_heads)
    v = ac.split_heads(encoder_states @ w_v, n_heads)
    scores = q @ k.mT / math.sqrt(q.shape[-1])
    if encoder_mask is not None:
        scores = scores.masked_fill(encoder_mask[:, None, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return ac.merge_heads(weights @ v) @ w_o, weights


def ca_mask_ignored(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    q = ac.split_heads(decoder_states @ w_q, n_heads)
    k = ac.split_heads(encoder_states @ w_k, n_heads)
    v = ac.split_heads(encoder_states @ w_v, n_heads)
    out, weights = ac.scaled_dot_product_attention(q, k, v, return_weights=True)
    return ac.merge_heads(out) @ w_o, weights


def ca_no_wo(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    q = ac.split_heads(decoder_states @ w_q, n_heads)
    k = ac.split_heads(encoder_states @ w_k, n_heads)
    v = ac.split_heads(encoder_states @ w_v, n_heads)
    mask = None if encoder_mask is None else encoder_mask[:, None, None, :]
    out, weights = ac.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    return ac.merge_heads(out), weights


def ca_split_no_transpose(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    B, T, d = decoder_states.shape
    S = encoder_states.shape[1]
    h = d // n_heads
    q = (decoder_states @ w_q).reshape(B, n_heads, T, h)
    k = (encoder_states @ w_k).reshape(B, n_heads, S, h)
    v = (encoder_states @ w_v).reshape(B, n_heads, S, h)
    mask = None if encoder_mask is None else encoder_mask[:, None, None, :]
    out, weights = ac.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    return out.reshape(B, T, d) @ w_o, weights


def ca_softmax_dim2(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    q = ac.split_heads(decoder_states @ w_q, n_heads)
    k = ac.split_heads(encoder_states @ w_k, n_heads)
    v = ac.split_heads(encoder_states @ w_v, n_heads)
    scores = q @ k.mT / math.sqrt(q.shape[-1])
    if encoder_mask is not None:
        scores = scores.masked_fill(~encoder_mask[:, None, None, :], -1e9)
    weights = torch.softmax(scores, dim=-2)
    return ac.merge_heads(weights @ v) @ w_o, weights


def ca_fill_zero(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    q = ac.split_heads(decoder_states @ w_q, n_heads)
    k = ac.split_heads(encoder_states @ w_k, n_heads)
    v = ac.split_heads(encoder_states @ w_v, n_heads)
    scores = q @ k.mT / math.sqrt(q.shape[-1])
    if encoder_mask is not None:
        scores = scores.masked_fill(~encoder_mask[:, None, None, :], 0.0)
    weights = torch.softmax(scores, dim=-1)
    return ac.merge_heads(weights @ v) @ w_o, weights


def ca_zero_padded_states_inplace(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    if encoder_mask is not None:
        encoder_states.masked_fill_(~encoder_mask[..., None], 0.0)
    q = ac.split_heads(decoder_states @ w_q, n_heads)
    k = ac.split_heads(encoder_states @ w_k, n_heads)
    v = ac.split_heads(encoder_states @ w_v, n_heads)
    mask = None if encoder_mask is None else encoder_mask[:, None, None, :]
    out, weights = ac.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    return ac.merge_heads(out) @ w_o, weights


def ca_scores_as_weights(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    q = ac.split_heads(decoder_states @ w_q, n_heads)
    k = ac.split_heads(encoder_states @ w_k, n_heads)
    v = ac.split_heads(encoder_states @ w_v, n_heads)
    scores = q @ k.mT / math.sqrt(q.shape[-1])
    if encoder_mask is not None:
        scores = scores.masked_fill(~encoder_mask[:, None, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return ac.merge_heads(weights @ v) @ w_o, scores


def ca_merge_no_transpose(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    q = ac.split_heads(decoder_states @ w_q, n_heads)
    k = ac.split_heads(encoder_states @ w_k, n_heads)
    v = ac.split_heads(encoder_states @ w_v, n_heads)
    mask = None if encoder_mask is None else encoder_mask[:, None, None, :]
    out, weights = ac.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    B, H, T, h = out.shape
    return out.reshape(B, T, H * h) @ w_o, weights


def ca_mask_first_batch(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    # the mask of the first sentence for every sentence: right for batch 1
    q = ac.split_heads(decoder_states @ w_q, n_heads)
    k = ac.split_heads(encoder_states @ w_k, n_heads)
    v = ac.split_heads(encoder_states @ w_v, n_heads)
    mask = None if encoder_mask is None else encoder_mask[0].view(1, 1, 1, -1)
    out, weights = ac.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    return ac.merge_heads(out) @ w_o, weights


def ca_wo_transposed(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    q = ac.split_heads(decoder_states @ w_q, n_heads)
    k = ac.split_heads(encoder_states @ w_k, n_heads)
    v = ac.split_heads(encoder_states @ w_v, n_heads)
    mask = None if encoder_mask is None else encoder_mask[:, None, None, :]
    out, weights = ac.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    return F.linear(ac.merge_heads(out), w_o), weights


MISTAKES_07 = {
    "cross_attention": [
        ca_scale_d_model,
        ca_swap_wk_wv,
        ca_causal,
        ca_mask_inverted,
        ca_mask_ignored,
        ca_no_wo,
        ca_split_no_transpose,
        ca_softmax_dim2,
        ca_fill_zero,
        ca_zero_padded_states_inplace,
        ca_scores_as_weights,
        ca_merge_no_transpose,
        ca_mask_first_batch,
        ca_wo_transposed,
    ]
}


# ---------------- variants
def ca_einsum(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    B, T, d = decoder_states.shape
    S = encoder_states.shape[1]
    h = d // n_heads
    q = torch.einsum("btd,de->bte", decoder_states, w_q).view(B, T, n_heads, h)
    k = torch.einsum("bsd,de->bse", encoder_states, w_k).view(B, S, n_heads, h)
    v = torch.einsum("bsd,de->bse", encoder_states, w_v).view(B, S, n_heads, h)
    scores = torch.einsum("bthe,bshe->bhts", q, k) / h**0.5
    if encoder_mask is not None:
        scores = torch.where(encoder_mask[:, None, None, :], scores, torch.tensor(float("-inf")))
    weights = F.softmax(scores, dim=-1)
    out = torch.einsum("bhts,bshe->bthe", weights, v).reshape(B, T, d)
    return out @ w_o, weights


def ca_loop_heads(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    d = decoder_states.shape[-1]
    h = d // n_heads
    q, k, v = decoder_states @ w_q, encoder_states @ w_k, encoder_states @ w_v
    heads, all_weights = [], []
    for i in range(n_heads):
        sl = slice(i * h, (i + 1) * h)
        s = q[..., sl] @ k[..., sl].transpose(1, 2) * h**-0.5
        if encoder_mask is not None:
            s = s.masked_fill(~encoder_mask.unsqueeze(1), -torch.inf)
        w = s.softmax(dim=-1)
        heads.append(w @ v[..., sl])
        all_weights.append(w)
    return torch.cat(heads, dim=-1) @ w_o, torch.stack(all_weights, dim=1)


def ca_float64(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    dt = decoder_states.dtype
    y, x = decoder_states.double(), encoder_states.double()
    q = ac.split_heads(y @ w_q.double(), n_heads)
    k = ac.split_heads(x @ w_k.double(), n_heads)
    v = ac.split_heads(x @ w_v.double(), n_heads)
    scores = q @ k.mT / math.sqrt(q.shape[-1])
    if encoder_mask is not None:
        scores = (
            scores
            + torch.zeros_like(encoder_mask, dtype=torch.float64).masked_fill(~encoder_mask, float("-inf"))[
                :, None, None, :
            ]
        )
    weights = scores.softmax(-1)
    return (ac.merge_heads(weights @ v) @ w_o.double()).to(dt), weights.to(dt)


def ca_fsdpa(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    q = ac.split_heads(decoder_states @ w_q, n_heads)
    k = ac.split_heads(encoder_states @ w_k, n_heads)
    v = ac.split_heads(encoder_states @ w_v, n_heads)
    mask = None if encoder_mask is None else encoder_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = q @ k.mT / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, -1)
    return ac.merge_heads(out) @ w_o, weights


def ca_linear_project_once(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    # keys and values in one matrix product, then chunk
    kv = encoder_states @ torch.cat([w_k, w_v], dim=1)
    k, v = kv.chunk(2, dim=-1)
    q = ac.split_heads(decoder_states @ w_q, n_heads)
    k, v = ac.split_heads(k, n_heads), ac.split_heads(v, n_heads)
    mask = None if encoder_mask is None else encoder_mask.view(encoder_mask.shape[0], 1, 1, -1)
    out, weights = ac.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    return ac.merge_heads(out) @ w_o, weights


VARIANTS_07 = {"cross_attention": [ca_einsum, ca_loop_heads, ca_float64, ca_fsdpa, ca_linear_project_once]}


def ca_weights_zeroed_after_softmax(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    q = ac.split_heads(decoder_states @ w_q, n_heads)
    k = ac.split_heads(encoder_states @ w_k, n_heads)
    v = ac.split_heads(encoder_states @ w_v, n_heads)
    weights = torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), dim=-1)
    if encoder_mask is not None:
        weights = weights.masked_fill(~encoder_mask[:, None, None, :], 0.0)
    return ac.merge_heads(weights @ v) @ w_o, weights


MISTAKES_07["cross_attention"].append(ca_weights_zeroed_after_softmax)


# ---------------------------------------------------------------- lesson 08


# ---------------- sinusoidal_table mistakes
def st_exponent_i_over_d(n_positions, d_model, base=10000.0):
    p = torch.arange(n_positions, dtype=torch.float64)[:, None]
    i = torch.arange(d_model // 2, dtype=torch.float64)
    angles = p / base ** (i / d_model)
    t = torch.zeros(n_positions, d_model, dtype=torch.float64)
    t[:, 0::2], t[:, 1::2] = angles.sin(), angles.cos()
    return t.float()


def st_sin_cos_swapped(n_positions, d_model, base=10000.0):
    p = torch.arange(n_positions, dtype=torch.float64)[:, None]
    angles = p / base ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    t = torch.zeros(n_positions, d_model)
    t[:, 0::2], t[:, 1::2] = angles.cos().float(), angles.sin().float()
    return t


def st_blocks(n_positions, d_model, base=10000.0):
    p = torch.arange(n_positions, dtype=torch.float64)[:, None]
    angles = p / base ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).float()


def st_positions_from_one(n_positions, d_model, base=10000.0):
    p = torch.arange(1, n_positions + 1, dtype=torch.float64)[:, None]
    angles = p / base ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    t = torch.zeros(n_positions, d_model)
    t[:, 0::2], t[:, 1::2] = angles.sin().float(), angles.cos().float()
    return t


def st_base_ignored(n_positions, d_model, base=10000.0):
    p = torch.arange(n_positions, dtype=torch.float64)[:, None]
    angles = p / 10000.0 ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    t = torch.zeros(n_positions, d_model)
    t[:, 0::2], t[:, 1::2] = angles.sin().float(), angles.cos().float()
    return t


def st_float64_returned(n_positions, d_model, base=10000.0):
    p = torch.arange(n_positions, dtype=torch.float64)[:, None]
    angles = p / base ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    t = torch.zeros(n_positions, d_model, dtype=torch.float64)
    t[:, 0::2], t[:, 1::2] = angles.sin(), angles.cos()
    return t


def st_multiply(n_positions, d_model, base=10000.0):
    p = torch.arange(n_positions, dtype=torch.float64)[:, None]
    angles = p * base ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    t = torch.zeros(n_positions, d_model)
    t[:, 0::2], t[:, 1::2] = angles.sin().float(), angles.cos().float()
    return t


def st_per_column_frequency(n_positions, d_model, base=10000.0):
    p = torch.arange(n_positions, dtype=torch.float64)[:, None]
    j = torch.arange(d_model, dtype=torch.float64)
    angles = p / base ** (j / d_model)
    t = torch.where(torch.arange(d_model) % 2 == 0, angles.sin(), angles.cos())
    return t.float()


def st_integer_exponent(n_positions, d_model, base=10000.0):
    p = torch.arange(n_positions)[:, None]
    two_i = torch.arange(0, d_model, 2)
    angles = p / base ** (two_i // d_model)
    t = torch.zeros(n_positions, d_model)
    t[:, 0::2], t[:, 1::2] = torch.sin(angles), torch.cos(angles)
    return t


def st_stack_wrong_axis(n_positions, d_model, base=10000.0):
    # stack sin/cos then flatten in the wrong order: columns [sin0..., cos0...] per row block
    p = torch.arange(n_positions, dtype=torch.float64)[:, None]
    angles = p / base ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    return torch.stack([angles.sin(), angles.cos()], dim=1).reshape(n_positions, d_model).float()


def st_rounded_log_base(n_positions, d_model, base=10000.0):
    # div_term with math.log(10000) hard-coded, as in the copied snippet
    position = torch.arange(n_positions).unsqueeze(1).float()
    div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
    pe = torch.zeros(n_positions, d_model)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


# ---------------- sinusoidal_table variants
def st_exp_log(n_positions, d_model, base=10000.0):
    position = torch.arange(n_positions, dtype=torch.float64).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(base) / d_model))
    pe = torch.empty(n_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe.to(torch.float32)


def st_float32_all_along(n_positions, d_model, base=10000.0):
    # the classic snippet, computed in float32 throughout
    position = torch.arange(n_positions).unsqueeze(1).float()
    div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(base) / d_model))
    pe = torch.zeros(n_positions, d_model)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


def st_loops(n_positions, d_model, base=10000.0):
    rows = []
    for p in range(n_positions):
        row = []
        for i in range(d_model // 2):
            angle = p / base ** (2 * i / d_model)
            row += [math.sin(angle), math.cos(angle)]
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float32).reshape(n_positions, d_model)


def st_stack_interleave(n_positions, d_model, base=10000.0):
    p = torch.arange(n_positions, dtype=torch.float64)[:, None]
    inv = torch.pow(
        torch.tensor(base, dtype=torch.float64), -torch.arange(0, d_model, 2, dtype=torch.float64) / d_model
    )
    angles = p * inv
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2).float()


def st_outer(n_positions, d_model, base=10000.0):
    freqs = 1.0 / (base ** (torch.arange(0, d_model, 2).double() / d_model))
    angles = torch.outer(torch.arange(n_positions).double(), freqs)
    out = torch.zeros(n_positions, d_model)
    out[..., ::2] = angles.sin()
    out[..., 1::2] = angles.cos()
    return out


# ---------------- apply_rope mistakes
def _angles(L, d, positions, base, dtype=torch.float64):
    pos = torch.arange(L, dtype=dtype) if positions is None else positions.to(dtype)
    theta = base ** (-torch.arange(0, d, 2, dtype=dtype) / d)
    return pos[:, None] * theta


def rope_interleaved(x, positions=None, base=10000.0):
    L, d = x.shape[-2], x.shape[-1]
    a = _angles(L, d, positions, base)
    cos, sin = a.cos().to(x.dtype), a.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.flatten(-2)


def rope_sign_flipped(x, positions=None, base=10000.0):
    L, d = x.shape[-2], x.shape[-1]
    a = _angles(L, d, positions, base)
    a = torch.cat([a, a], -1)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    rot = torch.cat([x2, -x1], -1)
    return (x * a.cos() + rot * a.sin()).to(x.dtype)


def rope_positions_ignored(x, positions=None, base=10000.0):
    L, d = x.shape[-2], x.shape[-1]
    a = _angles(L, d, None, base)
    a = torch.cat([a, a], -1)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    rot = torch.cat([-x2, x1], -1)
    return (x * a.cos() + rot * a.sin()).to(x.dtype)


def rope_exponent_i_over_d(x, positions=None, base=10000.0):
    L, d = x.shape[-2], x.shape[-1]
    pos = torch.arange(L, dtype=torch.float64) if positions is None else positions.double()
    theta = base ** (-torch.arange(d // 2, dtype=torch.float64) / d)
    a = pos[:, None] * theta
    a = torch.cat([a, a], -1)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return (x * a.cos() + torch.cat([-x2, x1], -1) * a.sin()).to(x.dtype)


def rope_repeat_interleave(x, positions=None, base=10000.0):
    L, d = x.shape[-2], x.shape[-1]
    a = _angles(L, d, positions, base).repeat_interleave(2, dim=-1)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return (x * a.cos() + torch.cat([-x2, x1], -1) * a.sin()).to(x.dtype)


def rope_returns_float32(x, positions=None, base=10000.0):
    L, d = x.shape[-2], x.shape[-1]
    a = _angles(L, d, positions, base, torch.float32)
    a = torch.cat([a, a], -1)
    xf = x.float()
    x1, x2 = xf[..., : d // 2], xf[..., d // 2 :]
    return xf * a.cos() + torch.cat([-x2, x1], -1) * a.sin()


def rope_base_ignored(x, positions=None, base=10000.0):
    L, d = x.shape[-2], x.shape[-1]
    a = _angles(L, d, positions, 10000.0)
    a = torch.cat([a, a], -1)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return (x * a.cos() + torch.cat([-x2, x1], -1) * a.sin()).to(x.dtype)


def rope_wrong_length_axis(x, positions=None, base=10000.0):
    # L from the first axis: right for a 2-D x only
    L, d = x.shape[0], x.shape[-1]
    pos = torch.arange(L) if positions is None else positions
    theta = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    a = pos[:, None].double() * theta
    a = torch.cat([a, a], -1)
    if x.dim() > 2:
        a = a[0]
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return (x * a.cos() + torch.cat([-x2, x1], -1) * a.sin()).to(x.dtype)


def rope_inplace(x, positions=None, base=10000.0):
    L, d = x.shape[-2], x.shape[-1]
    a = _angles(L, d, positions, base).to(x.dtype)
    cos, sin = a.cos(), a.sin()
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    new1 = x1 * cos - x2 * sin
    new2 = x2 * cos + x1 * sin
    x1.copy_(new1)
    x2.copy_(new2)
    return x


def rope_double_exponent(x, positions=None, base=10000.0):
    L, d = x.shape[-2], x.shape[-1]
    pos = torch.arange(L, dtype=torch.float64) if positions is None else positions.double()
    i = torch.arange(0, d, 2, dtype=torch.float64)
    theta = base ** (-2 * i / d)
    a = pos[:, None] * theta
    a = torch.cat([a, a], -1)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return (x * a.cos() + torch.cat([-x2, x1], -1) * a.sin()).to(x.dtype)


def rope_half_precision_angles(x, positions=None, base=10000.0):
    # angles computed in x's own dtype (float16 / bfloat16 positions lose integers past 2048 / 256)
    L, d = x.shape[-2], x.shape[-1]
    pos = (torch.arange(L) if positions is None else positions).to(x.dtype)
    theta = (base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)).to(x.dtype)
    a = pos[:, None] * theta
    a = torch.cat([a, a], -1)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * a.cos() + torch.cat([-x2, x1], -1) * a.sin()


def rope_rotates_values_backwards(x, positions=None, base=10000.0):
    L, d = x.shape[-2], x.shape[-1]
    a = torch.cat([_angles(L, d, positions, base)] * 2, -1)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return (x * a.cos() - torch.cat([-x2, x1], -1) * a.sin()).to(x.dtype)


# ---------------- apply_rope variants
def rope_complex(x, positions=None, base=10000.0):
    L, d = x.shape[-2], x.shape[-1]
    h = d // 2
    a = _angles(L, d, positions, base)
    z = torch.complex(x[..., :h].double(), x[..., h:].double()) * torch.polar(torch.ones_like(a), a)
    return torch.cat([z.real, z.imag], dim=-1).to(x.dtype)


def rope_explicit_pairs(x, positions=None, base=10000.0):
    d = x.shape[-1]
    L = x.shape[-2]
    if positions is None:
        positions = torch.arange(L)
    inv_freq = 1.0 / (base ** (torch.arange(0, d, 2).float() / d))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    cos, sin = freqs.cos(), freqs.sin()
    x1, x2 = x[..., : d // 2].float(), x[..., d // 2 :].float()
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).type_as(x)


def rope_chunk(x, positions=None, base=10000.0):
    *_, L, d = x.shape
    pos = torch.arange(L, dtype=torch.float64) if positions is None else positions.to(torch.float64)
    theta = torch.pow(base, -torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = torch.einsum("l,f->lf", pos, theta)
    emb = torch.cat((angles, angles), dim=-1)
    x1, x2 = x.double().chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (x.double() * emb.cos() + rotated * emb.sin()).to(x.dtype)


def rope_rotation_matrix(x, positions=None, base=10000.0):
    *_, L, d = x.shape
    h = d // 2
    a = _angles(L, d, positions, base)
    c, s = a.cos(), a.sin()
    R = torch.zeros(L, d, d, dtype=torch.float64)
    idx = torch.arange(h)
    R[:, idx, idx] = c
    R[:, idx + h, idx + h] = c
    R[:, idx, idx + h] = -s
    R[:, idx + h, idx] = s
    return torch.einsum("lij,...lj->...li", R, x.double()).to(x.dtype)


MISTAKES_08 = {
    "sinusoidal_table": [
        st_exponent_i_over_d,
        st_sin_cos_swapped,
        st_blocks,
        st_positions_from_one,
        st_base_ignored,
        st_float64_returned,
        st_multiply,
        st_per_column_frequency,
        st_integer_exponent,
        st_stack_wrong_axis,
        st_rounded_log_base,
    ],
    "apply_rope": [
        rope_interleaved,
        rope_sign_flipped,
        rope_positions_ignored,
        rope_exponent_i_over_d,
        rope_repeat_interleave,
        rope_returns_float32,
        rope_base_ignored,
        rope_wrong_length_axis,
        rope_inplace,
        rope_double_exponent,
        rope_half_precision_angles,
        rope_rotates_values_backwards,
    ],
}
VARIANTS_08 = {
    "sinusoidal_table": [st_exp_log, st_float32_all_along, st_loops, st_stack_interleave, st_outer],
    "apply_rope": [rope_complex, rope_explicit_pairs, rope_chunk, rope_rotation_matrix],
}


# ---------------------------------------------------------------- lesson 08b

_TABLES: dict[Any, Any] = {}


def rope_cached_by_shape(x, positions=None, base=10000.0):
    # cos/sin tables cached by (L, d_head), as real models cache them by sequence length
    L, d = x.shape[-2], x.shape[-1]
    if (L, d) not in _TABLES:
        pos = torch.arange(L, dtype=torch.float64) if positions is None else positions.double()
        a = pos[:, None] * base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
        a = torch.cat([a, a], -1)
        _TABLES[(L, d)] = (a.cos(), a.sin())
    cos, sin = _TABLES[(L, d)]
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * cos.to(x.dtype) + torch.cat([-x2, x1], -1) * sin.to(x.dtype)


_COSSIN: dict[Any, Any] = {}


def rope_cached_max_len(x, positions=None, base=10000.0):
    # one table up to the longest length seen so far, keyed by d_head only (base forgotten)
    L, d = x.shape[-2], x.shape[-1]
    pos = torch.arange(L) if positions is None else positions
    need = int(pos.max()) + 1
    if d not in _COSSIN or _COSSIN[d][0].shape[0] < need:
        a = torch.arange(max(need, 64), dtype=torch.float64)[:, None] * base ** (
            -torch.arange(0, d, 2, dtype=torch.float64) / d
        )
        a = torch.cat([a, a], -1)
        _COSSIN[d] = (a.cos(), a.sin())
    cos, sin = _COSSIN[d][0][pos], _COSSIN[d][1][pos]
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * cos.to(x.dtype) + torch.cat([-x2, x1], -1) * sin.to(x.dtype)


MISTAKES_08B = {"apply_rope": [rope_cached_by_shape, rope_cached_max_len]}
VARIANTS_08B: dict[Any, Any] = {}


# ---------------------------------------------------------------- lesson 09


def kv_no_slice(q_new, k_new, v_new, k_cache, v_cache, length):
    T = q_new.shape[-2]
    pos = torch.arange(length, length + T)
    q, k = apply_rope(q_new, pos), apply_rope(k_new, pos)
    keys = torch.cat([k_cache, k], dim=-2)
    values = torch.cat([v_cache, v_new], dim=-2)
    S = keys.shape[-2]
    mask = causal_mask(S)[-T:]
    return grouped_query_attention(q, keys, values, mask), keys, values


def kv_positions_from_zero(q_new, k_new, v_new, k_cache, v_cache, length):
    T = q_new.shape[-2]
    q, k = apply_rope(q_new), apply_rope(k_new)
    keys = torch.cat([k_cache[:, :, :length], k], dim=-2)
    values = torch.cat([v_cache[:, :, :length], v_new], dim=-2)
    mask = causal_mask(length + T)[-T:]
    return grouped_query_attention(q, keys, values, mask), keys, values


def kv_rotate_values(q_new, k_new, v_new, k_cache, v_cache, length):
    T = q_new.shape[-2]
    pos = torch.arange(length, length + T)
    q, k, v = apply_rope(q_new, pos), apply_rope(k_new, pos), apply_rope(v_new, pos)
    keys = torch.cat([k_cache[:, :, :length], k], dim=-2)
    values = torch.cat([v_cache[:, :, :length], v], dim=-2)
    mask = causal_mask(length + T)[-T:]
    return grouped_query_attention(q, keys, values, mask), keys, values


def kv_rotate_whole_cache(q_new, k_new, v_new, k_cache, v_cache, length):
    T = q_new.shape[-2]
    keys = torch.cat([k_cache[:, :, :length], k_new], dim=-2)
    keys = apply_rope(keys)  # rotates the cached (already rotated) keys a second time
    values = torch.cat([v_cache[:, :, :length], v_new], dim=-2)
    q = apply_rope(q_new, torch.arange(length, length + T))
    mask = causal_mask(length + T)[-T:]
    return grouped_query_attention(q, keys, values, mask), keys, values


def kv_no_mask(q_new, k_new, v_new, k_cache, v_cache, length):
    T = q_new.shape[-2]
    pos = torch.arange(length, length + T)
    q, k = apply_rope(q_new, pos), apply_rope(k_new, pos)
    keys = torch.cat([k_cache[:, :, :length], k], dim=-2)
    values = torch.cat([v_cache[:, :, :length], v_new], dim=-2)
    return grouped_query_attention(q, keys, values), keys, values


def kv_mask_top_left(q_new, k_new, v_new, k_cache, v_cache, length):
    T = q_new.shape[-2]
    pos = torch.arange(length, length + T)
    q, k = apply_rope(q_new, pos), apply_rope(k_new, pos)
    keys = torch.cat([k_cache[:, :, :length], k], dim=-2)
    values = torch.cat([v_cache[:, :, :length], v_new], dim=-2)
    mask = causal_mask(length + T)[:T]
    return grouped_query_attention(q, keys, values, mask), keys, values


def kv_only_q_rotated(q_new, k_new, v_new, k_cache, v_cache, length):
    T = q_new.shape[-2]
    pos = torch.arange(length, length + T)
    q = apply_rope(q_new, pos)
    keys = torch.cat([k_cache[:, :, :length], k_new], dim=-2)
    values = torch.cat([v_cache[:, :, :length], v_new], dim=-2)
    mask = causal_mask(length + T)[-T:]
    return grouped_query_attention(q, keys, values, mask), keys, values


def kv_write_into_cache_return_view(q_new, k_new, v_new, k_cache, v_cache, length):
    T = q_new.shape[-2]
    pos = torch.arange(length, length + T)
    q, k = apply_rope(q_new, pos), apply_rope(k_new, pos)
    k_cache[:, :, length : length + T] = k
    v_cache[:, :, length : length + T] = v_new
    keys, values = k_cache[:, :, : length + T], v_cache[:, :, : length + T]
    mask = causal_mask(length + T)[-T:]
    return grouped_query_attention(q, keys, values, mask), keys, values


def kv_gqa_repeat_tiled(q_new, k_new, v_new, k_cache, v_cache, length):
    # own grouped attention with .repeat (head h reads kv head h % n_kv, not h // group)
    T, d = q_new.shape[-2], q_new.shape[-1]
    pos = torch.arange(length, length + T)
    q, k = apply_rope(q_new, pos), apply_rope(k_new, pos)
    keys = torch.cat([k_cache[:, :, :length], k], dim=-2)
    values = torch.cat([v_cache[:, :, :length], v_new], dim=-2)
    group = q.shape[1] // keys.shape[1]
    kk, vv = keys.repeat(1, group, 1, 1), values.repeat(1, group, 1, 1)
    s = q @ kk.mT / math.sqrt(d)
    s = s.masked_fill(~causal_mask(length + T)[-T:], float("-inf"))
    return s.softmax(-1) @ vv, keys, values


def kv_mask_off_by_one(q_new, k_new, v_new, k_cache, v_cache, length):
    T = q_new.shape[-2]
    pos = torch.arange(length, length + T)
    q, k = apply_rope(q_new, pos), apply_rope(k_new, pos)
    keys = torch.cat([k_cache[:, :, :length], k], dim=-2)
    values = torch.cat([v_cache[:, :, :length], v_new], dim=-2)
    mask = torch.ones(T, length + T, dtype=torch.bool).tril(diagonal=length - 1)
    mask[:, 0] = True
    return grouped_query_attention(q, keys, values, mask), keys, values


def kv_positions_off_by_one(q_new, k_new, v_new, k_cache, v_cache, length):
    T = q_new.shape[-2]
    pos = torch.arange(length + 1, length + T + 1)
    q, k = apply_rope(q_new, pos), apply_rope(k_new, pos)
    keys = torch.cat([k_cache[:, :, :length], k], dim=-2)
    values = torch.cat([v_cache[:, :, :length], v_new], dim=-2)
    mask = causal_mask(length + T)[-T:]
    return grouped_query_attention(q, keys, values, mask), keys, values


def kv_unrotated_keys_returned(q_new, k_new, v_new, k_cache, v_cache, length):
    T = q_new.shape[-2]
    pos = torch.arange(length, length + T)
    q, k = apply_rope(q_new, pos), apply_rope(k_new, pos)
    keys = torch.cat([k_cache[:, :, :length], k], dim=-2)
    values = torch.cat([v_cache[:, :, :length], v_new], dim=-2)
    mask = causal_mask(length + T)[-T:]
    out = grouped_query_attention(q, keys, values, mask)
    return out, torch.cat([k_cache[:, :, :length], k_new], dim=-2), values


def kv_scale_by_head_count(q_new, k_new, v_new, k_cache, v_cache, length):
    T = q_new.shape[-2]
    pos = torch.arange(length, length + T)
    q, k = apply_rope(q_new, pos), apply_rope(k_new, pos)
    keys = torch.cat([k_cache[:, :, :length], k], dim=-2)
    values = torch.cat([v_cache[:, :, :length], v_new], dim=-2)
    group = q.shape[1] // keys.shape[1]
    kk = keys.repeat_interleave(group, dim=1)
    vv = values.repeat_interleave(group, dim=1)
    s = q @ kk.mT / math.sqrt(q.shape[-1] * q.shape[1])
    s = s.masked_fill(~causal_mask(length + T)[-T:], float("-inf"))
    return s.softmax(-1) @ vv, keys, values


def kv_no_mask_when_single_query_only(q_new, k_new, v_new, k_cache, v_cache, length):
    # masks only when the cache is empty (prefill), not on a multi-token step onto a cache
    T = q_new.shape[-2]
    pos = torch.arange(length, length + T)
    q, k = apply_rope(q_new, pos), apply_rope(k_new, pos)
    keys = torch.cat([k_cache[:, :, :length], k], dim=-2)
    values = torch.cat([v_cache[:, :, :length], v_new], dim=-2)
    mask = causal_mask(T) if length == 0 else None
    return grouped_query_attention(q, keys, values, mask), keys, values


# ---------------- variants
def kv_own_gqa_sdpa(q_new, k_new, v_new, k_cache, v_cache, length):
    T = q_new.shape[-2]
    pos = torch.arange(length, length + T)
    q, k = apply_rope(q_new, pos), apply_rope(k_new, pos)
    keys = torch.cat((k_cache[..., :length, :], k), dim=2)
    values = torch.cat((v_cache[..., :length, :], v_new), dim=2)
    group = q.shape[1] // keys.shape[1]
    allowed = torch.arange(length + T)[None, :] <= (length + torch.arange(T))[:, None]
    out = F.scaled_dot_product_attention(
        q, keys.repeat_interleave(group, dim=1), values.repeat_interleave(group, dim=1), attn_mask=allowed
    )
    return out, keys, values


def kv_einsum_groups(q_new, k_new, v_new, k_cache, v_cache, length):
    B, H, T, d = q_new.shape
    pos = torch.arange(length, length + T)
    q, k = apply_rope(q_new, pos), apply_rope(k_new, pos)
    keys = torch.cat([k_cache.narrow(2, 0, length), k], dim=2)
    values = torch.cat([v_cache.narrow(2, 0, length), v_new], dim=2)
    Hk = keys.shape[1]
    qg = q.reshape(B, Hk, H // Hk, T, d)
    s = torch.einsum("bgqtd,bgsd->bgqts", qg, keys) / math.sqrt(d)
    s = torch.where(causal_mask(length + T)[length:], s, float("-inf"))
    out = torch.einsum("bgqts,bgsd->bgqtd", s.softmax(-1), values).reshape(B, H, T, d)
    return out, keys, values


def kv_float64(q_new, k_new, v_new, k_cache, v_cache, length):
    dt = q_new.dtype
    T = q_new.shape[-2]
    pos = torch.arange(length, length + T)
    q = apply_rope(q_new.double(), pos)
    k = apply_rope(k_new, pos)
    keys = torch.cat([k_cache[:, :, :length], k], dim=-2)
    values = torch.cat([v_cache[:, :, :length], v_new], dim=-2)
    mask = causal_mask(length + T, length + T)[length : length + T]
    out = grouped_query_attention(q, keys.double(), values.double(), mask)
    return out.to(dt), keys, values


def kv_mask_by_comparison(q_new, k_new, v_new, k_cache, v_cache, length):
    T = q_new.shape[2]
    positions = length + torch.arange(T)
    q_rot = apply_rope(q_new, positions)
    k_rot = apply_rope(k_new, positions)
    keys = torch.cat([k_cache[:, :, :length, :], k_rot], dim=2)
    values = torch.cat([v_cache[:, :, :length, :], v_new], dim=2)
    mask = torch.arange(length + T).unsqueeze(0) <= positions.unsqueeze(1)
    return grouped_query_attention(q_rot, keys, values, mask), keys, values


def kv_copy_then_write(q_new, k_new, v_new, k_cache, v_cache, length):
    # writes into its own copies of the caches (not the inputs)
    T = q_new.shape[-2]
    pos = torch.arange(length, length + T)
    q, k = apply_rope(q_new, pos), apply_rope(k_new, pos)
    B, Hk, _, d = k_new.shape
    keys = torch.empty(B, Hk, length + T, d, dtype=k_new.dtype)
    values = torch.empty(B, Hk, length + T, v_new.shape[-1], dtype=v_new.dtype)
    keys[:, :, :length] = k_cache[:, :, :length]
    keys[:, :, length:] = k
    values[:, :, :length] = v_cache[:, :, :length]
    values[:, :, length:] = v_new
    return grouped_query_attention(q, keys, values, causal_mask(length + T)[length:]), keys, values


MISTAKES_09 = {
    "cached_attention_step": [
        kv_no_slice,
        kv_positions_from_zero,
        kv_rotate_values,
        kv_rotate_whole_cache,
        kv_no_mask,
        kv_mask_top_left,
        kv_only_q_rotated,
        kv_write_into_cache_return_view,
        kv_gqa_repeat_tiled,
        kv_mask_off_by_one,
        kv_positions_off_by_one,
        kv_unrotated_keys_returned,
        kv_scale_by_head_count,
        kv_no_mask_when_single_query_only,
    ]
}
VARIANTS_09 = {
    "cached_attention_step": [kv_own_gqa_sdpa, kv_einsum_groups, kv_float64, kv_mask_by_comparison, kv_copy_then_write]
}


# ---------------------------------------------------------------- lesson 09b


def kv_per_head_loop(q_new, k_new, v_new, k_cache, v_cache, length):
    T, d = q_new.shape[-2], q_new.shape[-1]
    pos = torch.arange(length, length + T)
    q, k = apply_rope(q_new, pos), apply_rope(k_new, pos)
    keys = torch.cat([k_cache[:, :, :length], k], dim=-2)
    values = torch.cat([v_cache[:, :, :length], v_new], dim=-2)
    H, Hk = q.shape[1], keys.shape[1]
    outs = []
    for h in range(H):
        kv = h * Hk // H
        s = q[:, h] @ keys[:, kv].transpose(-1, -2) / math.sqrt(d)
        s = s + torch.full((T, length + T), float("-inf")).triu(length + 1)
        outs.append(torch.softmax(s, -1) @ values[:, kv])
    return torch.stack(outs, 1), keys, values


MISTAKES_09B: dict[Any, Any] = {}
VARIANTS_09B = {"cached_attention_step": [kv_per_head_loop]}


# ---------------------------------------------------------------- lesson 10


# ---------------- sliding_window_mask mistakes
def sw_strict(n, window, causal=False):
    off = torch.arange(n)[:, None] - torch.arange(n)[None, :]
    return (off >= 0) & (off < window) if causal else off.abs() < window


def sw_causal_reversed(n, window, causal=False):
    off = torch.arange(n)[:, None] - torch.arange(n)[None, :]
    return (off <= 0) & (off >= -window) if causal else off.abs() <= window


def sw_one_sided_always(n, window, causal=False):
    off = torch.arange(n)[:, None] - torch.arange(n)[None, :]
    return (off >= 0) & (off <= window)


def sw_causal_ignored(n, window, causal=False):
    off = torch.arange(n)[:, None] - torch.arange(n)[None, :]
    return off.abs() <= window


def sw_float(n, window, causal=False):
    off = torch.arange(n)[:, None] - torch.arange(n)[None, :]
    m = (off >= 0) & (off <= window) if causal else off.abs() <= window
    return m.float()


def sw_additive(n, window, causal=False):
    off = torch.arange(n)[:, None] - torch.arange(n)[None, :]
    m = (off >= 0) & (off <= window) if causal else off.abs() <= window
    return torch.zeros(n, n).masked_fill(~m, float("-inf"))


def sw_tril_off_by_one(n, window, causal=False):
    ones = torch.ones(n, n, dtype=torch.bool)
    if causal:
        return ones.tril() & ones.triu(-window + 1)
    return ones.tril(window) & ones.triu(-window)


def sw_inverted(n, window, causal=False):
    off = torch.arange(n)[:, None] - torch.arange(n)[None, :]
    m = (off >= 0) & (off <= window) if causal else off.abs() <= window
    return ~m


def sw_causal_window_halved(n, window, causal=False):
    # a causal window of `window` keys including itself
    off = torch.arange(n)[:, None] - torch.arange(n)[None, :]
    return (off >= 0) & (off < window) if causal else off.abs() <= window


def sw_int_dtype(n, window, causal=False):
    off = torch.arange(n)[:, None] - torch.arange(n)[None, :]
    m = (off >= 0) & (off <= window) if causal else off.abs() <= window
    return m.long()


def sw_j_minus_i_unsigned(n, window, causal=False):
    # uint8 arithmetic: i - j wraps around for j > i
    i = torch.arange(n, dtype=torch.uint8)
    off = i[:, None] - i[None, :]
    m = off <= window
    return m & (i[None, :] <= i[:, None]) if causal else m


# ---------------- sliding_window_mask variants
def sw_triu_tril(n, window, causal=False):
    ones = torch.ones(n, n, dtype=torch.bool)
    upper = 0 if causal else window
    return torch.tril(ones, diagonal=upper) & torch.triu(ones, diagonal=-window)


def sw_loops(n, window, causal=False):
    m = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        lo = max(0, i - window)
        hi = i if causal else min(n - 1, i + window)
        m[i, lo : hi + 1] = True
    return m


def sw_broadcast_abs(n, window, causal=False):
    i = torch.arange(n).unsqueeze(1)
    j = torch.arange(n).unsqueeze(0)
    m = (i - j).abs() <= window
    if causal:
        m &= j <= i
    return m


def sw_where(n, window, causal=False):
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    return torch.where(torch.tensor(causal), (j <= i) & (i - j <= window), (i - j).abs() <= window)


# ---------------- global_local_mask mistakes
def _off(n):
    return torch.arange(n)[:, None] - torch.arange(n)[None, :]


def gl_rows_only(n, window, global_tokens, causal=False):
    g = torch.zeros(n, dtype=torch.bool)
    g[list(global_tokens)] = True
    off = _off(n)
    m = (off.abs() <= window) | g[:, None]
    return m & (off >= 0) if causal else m


def gl_columns_only(n, window, global_tokens, causal=False):
    g = torch.zeros(n, dtype=torch.bool)
    g[list(global_tokens)] = True
    off = _off(n)
    m = (off.abs() <= window) | g[None, :]
    return m & (off >= 0) if causal else m


def gl_causal_before_globals(n, window, global_tokens, causal=False):
    g = torch.zeros(n, dtype=torch.bool)
    g[list(global_tokens)] = True
    off = _off(n)
    local = (off >= 0) & (off <= window) if causal else off.abs() <= window
    return local | g[:, None] | g[None, :]


def gl_causal_ignored(n, window, global_tokens, causal=False):
    g = torch.zeros(n, dtype=torch.bool)
    g[list(global_tokens)] = True
    return (_off(n).abs() <= window) | g[:, None] | g[None, :]


def gl_strict_window(n, window, global_tokens, causal=False):
    g = torch.zeros(n, dtype=torch.bool)
    g[list(global_tokens)] = True
    off = _off(n)
    m = (off.abs() < window) | g[:, None] | g[None, :]
    return m & (off >= 0) if causal else m


def gl_first_k_global(n, window, global_tokens, causal=False):
    g = torch.arange(n) < len(global_tokens)
    off = _off(n)
    m = (off.abs() <= window) | g[:, None] | g[None, :]
    return m & (off >= 0) if causal else m


def gl_intersection(n, window, global_tokens, causal=False):
    g = torch.zeros(n, dtype=torch.bool)
    g[list(global_tokens)] = True
    off = _off(n)
    m = (off.abs() <= window) | (g[:, None] & g[None, :])
    return m & (off >= 0) if causal else m


def gl_sorts_list_in_place(n, window, global_tokens, causal=False):
    global_tokens.sort()
    g = torch.zeros(n, dtype=torch.bool)
    g[global_tokens] = True
    off = _off(n)
    m = (off.abs() <= window) | g[:, None] | g[None, :]
    return m & (off >= 0) if causal else m


def gl_float(n, window, global_tokens, causal=False):
    g = torch.zeros(n)
    g[list(global_tokens)] = 1.0
    off = _off(n)
    m = (off.abs() <= window).float()
    m = torch.clamp(m + g[:, None] + g[None, :], max=1.0)
    return m * (off >= 0) if causal else m


def gl_causal_window_only_for_globals(n, window, global_tokens, causal=False):
    # causal only on the window, and global rows see the future
    g = torch.zeros(n, dtype=torch.bool)
    g[list(global_tokens)] = True
    off = _off(n)
    local = (off.abs() <= window) & ((off >= 0) if causal else True)
    return local | g[:, None] | (g[None, :] & (off >= 0) if causal else g[None, :])


def gl_global_row_limited_to_window_size(n, window, global_tokens, causal=False):
    # the global token's row loops only over keys 0..n-2 (off by one in the range)
    m = _off(n).abs() <= window
    for t in global_tokens:
        m[t, : n - 1] = True
        m[: n - 1, t] = True
    return m & (_off(n) >= 0) if causal else m


# ---------------- global_local_mask variants
def gl_index_assign(n, window, global_tokens, causal=False):
    i = torch.arange(n)
    m = (i[:, None] - i[None, :]).abs() <= window
    m[global_tokens, :] = True
    m[:, global_tokens] = True
    if causal:
        m = m.tril()
    return m


def gl_isin(n, window, global_tokens, causal=False):
    idx = torch.arange(n)
    g = torch.isin(idx, torch.tensor(global_tokens, dtype=torch.long))
    m = ((idx[:, None] - idx[None, :]).abs() <= window) | g.unsqueeze(0) | g.unsqueeze(1)
    if causal:
        m = m & torch.ones(n, n, dtype=torch.bool).tril()
    return m


def gl_loops(n, window, global_tokens, causal=False):
    gs = set(global_tokens)
    rows = []
    for i in range(n):
        row = []
        for j in range(n):
            ok = abs(i - j) <= window or i in gs or j in gs
            if causal and j > i:
                ok = False
            row.append(ok)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.bool).reshape(n, n)


def gl_logical_ops(n, window, global_tokens, causal=False):
    i = torch.arange(n).view(-1, 1)
    j = torch.arange(n).view(1, -1)
    g = torch.zeros(n, dtype=torch.bool).index_fill(0, torch.as_tensor(global_tokens, dtype=torch.long), True)
    m = torch.logical_or(torch.logical_or((i - j).abs().le(window), g.view(-1, 1)), g.view(1, -1))
    return torch.logical_and(m, j <= i) if causal else m


# ---------------- block_sparse_attention mistakes
def _blocks(n, b):
    return [torch.arange(s, min(s + b, n)) for s in range(0, n, b)]


def bs_dense(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    L, S = q.shape[-2], k.shape[-2]
    big = layout.repeat_interleave(block_size, 0).repeat_interleave(block_size, 1)[:L, :S]
    i, j = torch.arange(L)[:, None], torch.arange(S)[None, :]
    if causal:
        big = big & (j <= i)
    if mask_fn is not None:
        big = big & mask_fn(i, j)
    return scaled_dot_product_attention(q, k, v, big, scale=scale)


def bs_softmax_per_tile(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    L, S = q.shape[-2], k.shape[-2]
    outs = []
    for qb, qi in enumerate(_blocks(L, block_size)):
        acc = torch.zeros(*q.shape[:-2], len(qi), v.shape[-1], dtype=q.dtype)
        for kb, ki in enumerate(_blocks(S, block_size)):
            if not layout[qb, kb]:
                continue
            allowed = torch.ones(len(qi), len(ki), dtype=torch.bool)
            if causal:
                allowed &= ki[None, :] <= qi[:, None]
            if mask_fn is not None:
                allowed &= mask_fn(qi[:, None], ki[None, :])
            acc = acc + scaled_dot_product_attention(q[..., qi, :], k[..., ki, :], v[..., ki, :], allowed, scale=scale)
        outs.append(acc)
    return torch.cat(outs, dim=-2)


def _gathered(
    q,
    k,
    v,
    layout,
    block_size,
    mask_fn,
    causal,
    scale,
    *,
    qk_local=False,
    transpose_layout=False,
    swap_fn=False,
    ignore_scale=False,
    drop_last=False,
):
    L, S = q.shape[-2], k.shape[-2]
    lay = layout.T if transpose_layout else layout
    qblocks = _blocks(L, block_size)
    if drop_last and L % block_size:
        qblocks = qblocks[:-1]
    outs = []
    for qb, qi in enumerate(qblocks):
        kbs = lay[qb].nonzero().flatten().tolist()
        if not kbs:
            outs.append(torch.zeros(*q.shape[:-2], len(qi), v.shape[-1], dtype=q.dtype))
            continue
        ki = torch.cat([_blocks(S, block_size)[kb] for kb in kbs])
        allowed = torch.ones(len(qi), len(ki), dtype=torch.bool)
        if causal:
            if qk_local:
                allowed &= (ki % block_size)[None, :] <= (qi % block_size)[:, None]
            else:
                allowed &= ki[None, :] <= qi[:, None]
        if mask_fn is not None:
            allowed &= mask_fn(ki[None, :], qi[:, None]).T if swap_fn else mask_fn(qi[:, None], ki[None, :])
        outs.append(
            scaled_dot_product_attention(
                q[..., qi, :], k[..., ki, :], v[..., ki, :], allowed, scale=None if ignore_scale else scale
            )
        )
    return torch.cat(outs, dim=-2)


def bs_causal_ignored(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    return _gathered(q, k, v, layout, block_size, mask_fn, False, scale)


def bs_mask_fn_ignored(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    return _gathered(q, k, v, layout, block_size, None, causal, scale)


def bs_scale_ignored(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    return _gathered(q, k, v, layout, block_size, mask_fn, causal, scale, ignore_scale=True)


def bs_drop_last_block(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    return _gathered(q, k, v, layout, block_size, mask_fn, causal, scale, drop_last=True)


def bs_causal_local_indices(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    return _gathered(q, k, v, layout, block_size, mask_fn, causal, scale, qk_local=True)


def bs_layout_transposed(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    return _gathered(q, k, v, layout, block_size, mask_fn, causal, scale, transpose_layout=True)


def bs_mask_fn_swapped(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    return _gathered(q, k, v, layout, block_size, mask_fn, causal, scale, swap_fn=True)


def bs_nan_rows(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    # own softmax: a row with no allowed key gives 0/0 = NaN
    L, S = q.shape[-2], k.shape[-2]
    sc = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    outs = []
    for qb, qi in enumerate(_blocks(L, block_size)):
        kbs = layout[qb].nonzero().flatten().tolist()
        if not kbs:
            outs.append(torch.zeros(*q.shape[:-2], len(qi), v.shape[-1], dtype=q.dtype))
            continue
        ki = torch.cat([_blocks(S, block_size)[kb] for kb in kbs])
        s = q[..., qi, :] @ k[..., ki, :].mT * sc
        allowed = torch.ones(len(qi), len(ki), dtype=torch.bool)
        if causal:
            allowed &= ki[None, :] <= qi[:, None]
        if mask_fn is not None:
            allowed &= mask_fn(qi[:, None], ki[None, :])
        s = s.masked_fill(~allowed, float("-inf"))
        outs.append(torch.softmax(s, dim=-1) @ v[..., ki, :])
    return torch.cat(outs, dim=-2)


def bs_empty_row_uniform(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    # an empty layout row attends to nothing but gets the mean of all values
    L = q.shape[-2]
    out = _gathered(q, k, v, layout, block_size, mask_fn, causal, scale)
    for qb, qi in enumerate(_blocks(L, block_size)):
        if not layout[qb].any():
            out[..., qi, :] = v.mean(dim=-2, keepdim=True)
    return out


def bs_dense_scores_masked(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    # computes the full score matrix, masks outside the layout with -inf, then one softmax
    L, S = q.shape[-2], k.shape[-2]
    sc = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ k.mT * sc
    qb = torch.arange(L) // block_size
    kb = torch.arange(S) // block_size
    allowed = layout[qb][:, kb]
    i, j = torch.arange(L)[:, None], torch.arange(S)[None, :]
    if causal:
        allowed = allowed & (j <= i)
    if mask_fn is not None:
        allowed = allowed & mask_fn(i, j)
    w = torch.softmax(s.masked_fill(~allowed, float("-inf")), -1).nan_to_num(0.0)
    return w @ v


def bs_float32_zeros(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    # right except: the empty rows' zeros lose the batch dims (broadcast only for batch 1)
    L, S = q.shape[-2], k.shape[-2]
    outs = []
    for qb, qi in enumerate(_blocks(L, block_size)):
        kbs = layout[qb].nonzero().flatten().tolist()
        if not kbs:
            outs.append(
                torch.zeros(len(qi), v.shape[-1], dtype=q.dtype).expand(*q.shape[:-2], len(qi), v.shape[-1])
                if q.shape[0] == 1
                else torch.zeros(1, *q.shape[1:-2], len(qi), v.shape[-1], dtype=q.dtype)
            )
            continue
        ki = torch.cat([_blocks(S, block_size)[kb] for kb in kbs])
        allowed = torch.ones(len(qi), len(ki), dtype=torch.bool)
        if causal:
            allowed &= ki[None, :] <= qi[:, None]
        if mask_fn is not None:
            allowed &= mask_fn(qi[:, None], ki[None, :])
        outs.append(scaled_dot_product_attention(q[..., qi, :], k[..., ki, :], v[..., ki, :], allowed, scale=scale))
    return torch.cat(outs, dim=-2)


# ---------------- block_sparse_attention variants
def bs_index_select_loop(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    return _gathered(q, k, v, layout, block_size, mask_fn, causal, scale)


def bs_own_softmax_float64(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    L, S = q.shape[-2], k.shape[-2]
    sc = q.shape[-1] ** -0.5 if scale is None else scale
    out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=torch.float64)
    for qb in range(layout.shape[0]):
        q0, q1 = qb * block_size, min(L, (qb + 1) * block_size)
        ks = [
            torch.arange(kb * block_size, min(S, (kb + 1) * block_size))
            for kb in range(layout.shape[1])
            if layout[qb, kb]
        ]
        if not ks:
            continue
        ki = torch.cat(ks)
        qi = torch.arange(q0, q1)
        s = (q[..., q0:q1, :].double() @ k.index_select(-2, ki).double().transpose(-1, -2)) * sc
        ok = torch.ones(q1 - q0, len(ki), dtype=torch.bool)
        if causal:
            ok = ok & (ki.view(1, -1) <= qi.view(-1, 1))
        if mask_fn is not None:
            ok = ok & mask_fn(qi.view(-1, 1), ki.view(1, -1))
        s = s.masked_fill(~ok, float("-inf"))
        m = s.amax(-1, keepdim=True).clamp(min=-1e300).nan_to_num(0.0, neginf=0.0)
        e = torch.exp(s - m)
        denom = e.sum(-1, keepdim=True)
        w = torch.where(denom > 0, e / denom.clamp(min=1e-300), torch.zeros_like(e))
        out[..., q0:q1, :] = w @ v.index_select(-2, ki).double()
    return out.to(q.dtype)


def bs_fsdpa_nan_to_num(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    L, S = q.shape[-2], k.shape[-2]
    outs = []
    for qb in range(math.ceil(L / block_size)):
        qi = torch.arange(qb * block_size, min(L, qb * block_size + block_size))
        sel = torch.nonzero(layout[qb]).squeeze(-1)
        if sel.numel() == 0:
            outs.append(q.new_zeros(*q.shape[:-2], qi.numel(), v.shape[-1]))
            continue
        ki = (sel[:, None] * block_size + torch.arange(block_size)[None, :]).flatten()
        ki = ki[ki < S]
        ok = torch.ones(qi.numel(), ki.numel(), dtype=torch.bool)
        if causal:
            ok = ok & (ki[None] <= qi[:, None])
        if mask_fn is not None:
            ok = ok & mask_fn(qi[:, None], ki[None, :])
        o = F.scaled_dot_product_attention(q[..., qi, :], k[..., ki, :], v[..., ki, :], attn_mask=ok, scale=scale)
        outs.append(torch.where(ok.any(-1, keepdim=True), o, torch.zeros_like(o)))
    return torch.cat(outs, -2)


def bs_preallocated_out(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    L, S = q.shape[-2], k.shape[-2]
    out = q.new_zeros(*q.shape[:-1], v.shape[-1])
    key_blocks = [torch.arange(s, min(s + block_size, S)) for s in range(0, S, block_size)]
    for qb, start in enumerate(range(0, L, block_size)):
        qi = torch.arange(start, min(start + block_size, L))
        chosen = [key_blocks[kb] for kb in range(len(key_blocks)) if bool(layout[qb, kb])]
        if not chosen:
            continue
        ki = torch.cat(chosen)
        allowed = torch.ones(len(qi), len(ki), dtype=torch.bool)
        if causal:
            allowed = allowed & (qi[:, None] >= ki[None, :])
        if mask_fn is not None:
            allowed = allowed & mask_fn(qi[:, None], ki[None, :])
        out[..., start : start + len(qi), :] = scaled_dot_product_attention(
            q[..., start : start + len(qi), :], k[..., ki, :], v[..., ki, :], allowed, scale=scale
        )
    return out


MISTAKES_10 = {
    "sliding_window_mask": [
        sw_strict,
        sw_causal_reversed,
        sw_one_sided_always,
        sw_causal_ignored,
        sw_float,
        sw_additive,
        sw_tril_off_by_one,
        sw_inverted,
        sw_causal_window_halved,
        sw_int_dtype,
        sw_j_minus_i_unsigned,
    ],
    "global_local_mask": [
        gl_rows_only,
        gl_columns_only,
        gl_causal_before_globals,
        gl_causal_ignored,
        gl_strict_window,
        gl_first_k_global,
        gl_intersection,
        gl_sorts_list_in_place,
        gl_float,
        gl_causal_window_only_for_globals,
        gl_global_row_limited_to_window_size,
    ],
    "block_sparse_attention": [
        bs_dense,
        bs_softmax_per_tile,
        bs_causal_ignored,
        bs_mask_fn_ignored,
        bs_scale_ignored,
        bs_drop_last_block,
        bs_causal_local_indices,
        bs_layout_transposed,
        bs_mask_fn_swapped,
        bs_nan_rows,
        bs_empty_row_uniform,
        bs_dense_scores_masked,
        bs_float32_zeros,
    ],
}
VARIANTS_10 = {
    "sliding_window_mask": [sw_triu_tril, sw_loops, sw_broadcast_abs, sw_where],
    "global_local_mask": [gl_index_assign, gl_isin, gl_loops, gl_logical_ops],
    "block_sparse_attention": [bs_index_select_loop, bs_own_softmax_float64, bs_fsdpa_nan_to_num, bs_preallocated_out],
}


def bs_row_block_all_keys(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    # scores of each query block against every key, then the layout as a mask: O(L*S) work
    L, S = q.shape[-2], k.shape[-2]
    kb_of = torch.arange(S) // block_size
    outs = []
    for qb, qi in enumerate(_blocks(L, block_size)):
        allowed = layout[qb][kb_of][None, :].expand(len(qi), S)
        j = torch.arange(S)[None, :]
        if causal:
            allowed = allowed & (j <= qi[:, None])
        if mask_fn is not None:
            allowed = allowed & mask_fn(qi[:, None], j)
        outs.append(scaled_dot_product_attention(q[..., qi, :], k, v, allowed, scale=scale))
    return torch.cat(outs, dim=-2)


MISTAKES_10["block_sparse_attention"].append(bs_row_block_all_keys)


def bs_online_softmax_tiles(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    # one tile at a time with a running max and sum (flash-style), one softmax over the row in the end
    L, S = q.shape[-2], k.shape[-2]
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    outs = []
    for qb, q0 in enumerate(range(0, L, block_size)):
        qi = torch.arange(q0, min(q0 + block_size, L))
        qt = q[..., qi, :]
        m = torch.full((*q.shape[:-2], len(qi), 1), float("-inf"), dtype=q.dtype)
        den = torch.zeros_like(m)
        acc = torch.zeros(*q.shape[:-2], len(qi), v.shape[-1], dtype=q.dtype)
        for kb, k0 in enumerate(range(0, S, block_size)):
            if not layout[qb, kb]:
                continue
            ki = torch.arange(k0, min(k0 + block_size, S))
            s = qt @ k[..., ki, :].transpose(-1, -2) * sc
            ok = torch.ones(len(qi), len(ki), dtype=torch.bool)
            if causal:
                ok = ok & (ki[None, :] <= qi[:, None])
            if mask_fn is not None:
                ok = ok & mask_fn(qi[:, None], ki[None, :])
            s = s.masked_fill(~ok, float("-inf"))
            new_m = torch.maximum(m, s.amax(-1, keepdim=True))
            safe = torch.where(torch.isinf(new_m), torch.zeros_like(new_m), new_m)
            p = torch.exp(s - safe)
            corr = torch.exp(m - safe)
            den = den * corr + p.sum(-1, keepdim=True)
            acc = acc * corr + p @ v[..., ki, :]
            m = new_m
        outs.append(torch.where(den > 0, acc / den.clamp(min=torch.finfo(q.dtype).tiny), torch.zeros_like(acc)))
    return torch.cat(outs, dim=-2)


def bs_padded_block_view(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    # pad keys to whole blocks, view them as (n_blocks, block_size), index the layout's blocks
    L, S = q.shape[-2], k.shape[-2]
    nkb = layout.shape[1]
    pad = nkb * block_size - S
    kp = F.pad(k, (0, 0, 0, pad)).unflatten(-2, (nkb, block_size))
    vp = F.pad(v, (0, 0, 0, pad)).unflatten(-2, (nkb, block_size))
    pos = torch.arange(nkb * block_size).view(nkb, block_size)
    outs = []
    for qb in range(layout.shape[0]):
        qi = torch.arange(qb * block_size, min(L, (qb + 1) * block_size))
        sel = layout[qb].nonzero().flatten()
        ks = kp[..., sel, :, :].flatten(-3, -2)
        vs = vp[..., sel, :, :].flatten(-3, -2)
        kj = pos[sel].flatten()
        ok = (kj < S)[None, :].expand(len(qi), -1)
        if causal:
            ok = ok & (kj[None, :] <= qi[:, None])
        if mask_fn is not None:
            ok = ok & mask_fn(qi[:, None], kj[None, :])
        outs.append(scaled_dot_product_attention(q[..., qi, :], ks, vs, ok, scale=scale))
    return torch.cat(outs, dim=-2)


VARIANTS_10["block_sparse_attention"] += [bs_online_softmax_tiles, bs_padded_block_view]


# ---------------------------------------------------------------- lesson 10b


def _gather_rows(q, k, v, layout, block_size, allowed_of, scale):
    L, S = q.shape[-2], k.shape[-2]
    outs = []
    for qb in range(layout.shape[0]):
        qi = torch.arange(qb * block_size, min(L, (qb + 1) * block_size))
        kbs = layout[qb].nonzero().flatten().tolist()
        if not kbs:
            outs.append(torch.zeros(*q.shape[:-2], len(qi), v.shape[-1], dtype=q.dtype))
            continue
        ki = torch.cat([torch.arange(kb * block_size, min(S, (kb + 1) * block_size)) for kb in kbs])
        outs.append(
            scaled_dot_product_attention(
                q[..., qi, :], k.index_select(-2, ki), v.index_select(-2, ki), allowed_of(qi, ki), scale=scale
            )
        )
    return torch.cat(outs, dim=-2)


def bs_full_mask_when_masked(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    # builds the whole L x S boolean mask once when causal or mask_fn is given, then slices it per tile
    L, S = q.shape[-2], k.shape[-2]
    full = None
    if causal or mask_fn is not None:
        i, j = torch.arange(L)[:, None], torch.arange(S)[None, :]
        full = torch.ones(L, S, dtype=torch.bool)
        if causal:
            full = full & (j <= i)
        if mask_fn is not None:
            full = full & mask_fn(i, j)

    def allowed_of(qi, ki):
        if full is None:
            return torch.ones(len(qi), len(ki), dtype=torch.bool)
        return full[qi][:, ki]

    return _gather_rows(q, k, v, layout, block_size, allowed_of, scale)


def bs_additive_float_mask(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    # a float (L, S) additive bias built only when causal, then sliced per tile
    L, S = q.shape[-2], k.shape[-2]
    bias = torch.zeros(L, S).masked_fill(torch.ones(L, S, dtype=torch.bool).triu(1), float("-inf")) if causal else None
    outs = []
    for qb in range(layout.shape[0]):
        qi = torch.arange(qb * block_size, min(L, (qb + 1) * block_size))
        kbs = layout[qb].nonzero().flatten().tolist()
        if not kbs:
            outs.append(torch.zeros(*q.shape[:-2], len(qi), v.shape[-1], dtype=q.dtype))
            continue
        ki = torch.cat([torch.arange(kb * block_size, min(S, (kb + 1) * block_size)) for kb in kbs])
        allowed = torch.ones(len(qi), len(ki), dtype=torch.bool)
        if bias is not None:
            allowed = allowed & (bias[qi][:, ki] == 0)
        if mask_fn is not None:
            allowed = allowed & mask_fn(qi[:, None], ki[None, :])
        outs.append(
            scaled_dot_product_attention(
                q[..., qi, :], k.index_select(-2, ki), v.index_select(-2, ki), allowed, scale=scale
            )
        )
    return torch.cat(outs, dim=-2)


MISTAKES_10B = {"block_sparse_attention": [bs_full_mask_when_masked, bs_additive_float_mask]}
VARIANTS_10B: dict[Any, Any] = {}


# ---------------------------------------------------------------- lesson 12


def _proj(hidden, layer, n_heads, bias=True, transposed=False):
    def p(w, b):
        w = w.T if transposed else w
        return split_heads(hidden @ w + (b if bias else 0), n_heads)

    return p(layer.w_q, layer.b_q), p(layer.w_k, layer.b_k), p(layer.w_v, layer.b_v)


# ---------------- encoder_self_attention mistakes
def esa_no_bias(hidden, layer, key_mask, n_heads):
    q, k, v = _proj(hidden, layer, n_heads, bias=False)
    h, w = masked_attention(q, k, v, key_mask[:, None, None, :])
    return merge_heads(h) @ layer.w_o + layer.b_o, w


def esa_scale_d_model(hidden, layer, key_mask, n_heads):
    q, k, v = _proj(hidden, layer, n_heads)
    s = q @ k.mT / math.sqrt(hidden.shape[-1])
    s = s.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    w = s.softmax(-1)
    return merge_heads(w @ v) @ layer.w_o + layer.b_o, w


def esa_mask_ignored(hidden, layer, key_mask, n_heads):
    q, k, v = _proj(hidden, layer, n_heads)
    h, w = masked_attention(q, k, v)
    return merge_heads(h) @ layer.w_o + layer.b_o, w


def esa_mask_on_queries(hidden, layer, key_mask, n_heads):
    q, k, v = _proj(hidden, layer, n_heads)
    h, w = masked_attention(q, k, v, key_mask[:, None, :, None])
    return merge_heads(h) @ layer.w_o + layer.b_o, w


def esa_no_output_bias(hidden, layer, key_mask, n_heads):
    q, k, v = _proj(hidden, layer, n_heads)
    h, w = masked_attention(q, k, v, key_mask[:, None, None, :])
    return merge_heads(h) @ layer.w_o, w


def esa_residual_added(hidden, layer, key_mask, n_heads):
    q, k, v = _proj(hidden, layer, n_heads)
    h, w = masked_attention(q, k, v, key_mask[:, None, None, :])
    return hidden + merge_heads(h) @ layer.w_o + layer.b_o, w


def esa_split_no_transpose(hidden, layer, key_mask, n_heads):
    B, L, d = hidden.shape

    def p(w, b):
        return (hidden @ w + b).reshape(B, n_heads, L, d // n_heads)

    q, k, v = p(layer.w_q, layer.b_q), p(layer.w_k, layer.b_k), p(layer.w_v, layer.b_v)
    h, w = masked_attention(q, k, v, key_mask[:, None, None, :])
    return h.reshape(B, L, d) @ layer.w_o + layer.b_o, w


def esa_mask_inverted(hidden, layer, key_mask, n_heads):
    q, k, v = _proj(hidden, layer, n_heads)
    h, w = masked_attention(q, k, v, ~key_mask[:, None, None, :])
    return merge_heads(h) @ layer.w_o + layer.b_o, w


def esa_post_layernorm(hidden, layer, key_mask, n_heads):
    q, k, v = _proj(hidden, layer, n_heads)
    h, w = masked_attention(q, k, v, key_mask[:, None, None, :])
    out = merge_heads(h) @ layer.w_o + layer.b_o
    return F.layer_norm(hidden + out, hidden.shape[-1:], layer.ln_attn_weight, layer.ln_attn_bias) - hidden, w


def esa_weights_transposed(hidden, layer, key_mask, n_heads):
    # nn.Linear habit: x @ W.T (square matrices, so the shapes still fit)
    q, k, v = _proj(hidden, layer, n_heads, transposed=True)
    h, w = masked_attention(q, k, v, key_mask[:, None, None, :])
    return merge_heads(h) @ layer.w_o.T + layer.b_o, w


def esa_additive_mask_finite(hidden, layer, key_mask, n_heads):
    # BERT's (1 - mask) * -10000 additive mask is fine; but this learner adds +1 for real tokens
    q, k, v = _proj(hidden, layer, n_heads)
    s = q @ k.mT / math.sqrt(q.shape[-1]) + key_mask[:, None, None, :].float()
    w = s.softmax(-1)
    return merge_heads(w @ v) @ layer.w_o + layer.b_o, w


def esa_mask_first_sentence(hidden, layer, key_mask, n_heads):
    q, k, v = _proj(hidden, layer, n_heads)
    h, w = masked_attention(q, k, v, key_mask[0][None, None, None, :])
    return merge_heads(h) @ layer.w_o + layer.b_o, w


def esa_softmax_over_queries(hidden, layer, key_mask, n_heads):
    q, k, v = _proj(hidden, layer, n_heads)
    s = q @ k.mT / math.sqrt(q.shape[-1])
    s = s.masked_fill(~key_mask[:, None, None, :], -1e9)
    w = s.softmax(-2)
    return merge_heads(w @ v) @ layer.w_o + layer.b_o, w


# ---------------- encoder_self_attention variants
def esa_einsum(hidden, layer, key_mask, n_heads):
    B, L, d = hidden.shape
    h = d // n_heads
    q = torch.einsum("bld,de->ble", hidden, layer.w_q).add(layer.b_q).view(B, L, n_heads, h)
    k = torch.einsum("bld,de->ble", hidden, layer.w_k).add(layer.b_k).view(B, L, n_heads, h)
    v = torch.einsum("bld,de->ble", hidden, layer.w_v).add(layer.b_v).view(B, L, n_heads, h)
    s = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(h)
    s = torch.where(key_mask[:, None, None, :], s, torch.finfo(s.dtype).min)
    w = s.softmax(dim=-1)
    out = torch.einsum("bhqk,bkhe->bqhe", w, v).reshape(B, L, d)
    return out @ layer.w_o + layer.b_o, w


def esa_flinear(hidden, layer, key_mask, n_heads):
    q = split_heads(F.linear(hidden, layer.w_q.T, layer.b_q), n_heads)
    k = split_heads(F.linear(hidden, layer.w_k.T, layer.b_k), n_heads)
    v = split_heads(F.linear(hidden, layer.w_v.T, layer.b_v), n_heads)
    additive = torch.zeros(key_mask.shape, dtype=hidden.dtype).masked_fill(~key_mask, float("-inf"))
    s = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5 + additive[:, None, None, :]
    w = F.softmax(s, dim=-1)
    return F.linear(merge_heads(w @ v), layer.w_o.T, layer.b_o), w


def esa_fused_qkv(hidden, layer, key_mask, n_heads):
    w_qkv = torch.cat([layer.w_q, layer.w_k, layer.w_v], dim=1)
    b_qkv = torch.cat([layer.b_q, layer.b_k, layer.b_v])
    q, k, v = (
        split_heads(t, n_heads)
        for t in torch.addmm(b_qkv, hidden.flatten(0, 1), w_qkv).view(*hidden.shape[:2], -1).chunk(3, dim=-1)
    )
    heads, weights = masked_attention(q, k, v, key_mask.view(key_mask.shape[0], 1, 1, -1))
    return torch.baddbmm(
        layer.b_o.expand(hidden.shape[0], 1, -1), merge_heads(heads), layer.w_o.expand(hidden.shape[0], -1, -1)
    ), weights


def esa_float64(hidden, layer, key_mask, n_heads):
    x = hidden.double()
    q = split_heads(x @ layer.w_q.double() + layer.b_q.double(), n_heads)
    k = split_heads(x @ layer.w_k.double() + layer.b_k.double(), n_heads)
    v = split_heads(x @ layer.w_v.double() + layer.b_v.double(), n_heads)
    s = (q @ k.mT) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    w = torch.softmax(s, -1)
    out = merge_heads(w @ v) @ layer.w_o.double() + layer.b_o.double()
    return out.to(hidden.dtype), w.to(hidden.dtype)


def esa_bert_additive(hidden, layer, key_mask, n_heads):
    # BERT's own additive mask: (1 - mask) * large negative
    q, k, v = _proj(hidden, layer, n_heads)
    ext = (1.0 - key_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
    w = torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]) + ext, dim=-1)
    return merge_heads(w @ v) @ layer.w_o + layer.b_o, w


# ---------------- encoder_feed_forward mistakes
def ff_tanh(hidden, layer):
    return F.gelu(hidden @ layer.w_ff1 + layer.b_ff1, approximate="tanh") @ layer.w_ff2 + layer.b_ff2


def ff_relu(hidden, layer):
    return F.relu(hidden @ layer.w_ff1 + layer.b_ff1) @ layer.w_ff2 + layer.b_ff2


def ff_residual(hidden, layer):
    return hidden + F.gelu(hidden @ layer.w_ff1 + layer.b_ff1) @ layer.w_ff2 + layer.b_ff2


def ff_no_b2(hidden, layer):
    return F.gelu(hidden @ layer.w_ff1 + layer.b_ff1) @ layer.w_ff2


def ff_gelu_twice(hidden, layer):
    return F.gelu(F.gelu(hidden @ layer.w_ff1 + layer.b_ff1) @ layer.w_ff2 + layer.b_ff2)


def ff_layernorm(hidden, layer):
    out = F.gelu(hidden @ layer.w_ff1 + layer.b_ff1) @ layer.w_ff2 + layer.b_ff2
    return F.layer_norm(hidden + out, hidden.shape[-1:], layer.ln_ff_weight, layer.ln_ff_bias)


def ff_bias_after_gelu(hidden, layer):
    return (F.gelu(hidden @ layer.w_ff1) + layer.b_ff1) @ layer.w_ff2 + layer.b_ff2


def ff_sigmoid_gelu(hidden, layer):
    h = hidden @ layer.w_ff1 + layer.b_ff1
    return (h * torch.sigmoid(1.702 * h)) @ layer.w_ff2 + layer.b_ff2


def ff_erf_wrong_sqrt(hidden, layer):
    h = hidden @ layer.w_ff1 + layer.b_ff1
    return (0.5 * h * (1 + torch.erf(h / 2))) @ layer.w_ff2 + layer.b_ff2


def ff_silu(hidden, layer):
    return F.silu(hidden @ layer.w_ff1 + layer.b_ff1) @ layer.w_ff2 + layer.b_ff2


def ff_inplace_gelu_on_input(hidden, layer):
    hidden.mul_(1.0)  # harmless-looking, but then:
    h = torch.addmm(layer.b_ff1, hidden.view(-1, hidden.shape[-1]), layer.w_ff1)
    out = F.gelu(h) @ layer.w_ff2 + layer.b_ff2
    hidden.add_(0.0)
    return out.view(*hidden.shape[:-1], -1)


def ff_half_gelu(hidden, layer):
    h = hidden @ layer.w_ff1 + layer.b_ff1
    return (h * (1 + torch.erf(h / math.sqrt(2)))) @ layer.w_ff2 + layer.b_ff2


# ---------------- encoder_feed_forward variants
def ff_erf(hidden, layer):
    h = hidden @ layer.w_ff1 + layer.b_ff1
    return (0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))) @ layer.w_ff2 + layer.b_ff2


def ff_flinear(hidden, layer):
    return F.linear(F.gelu(F.linear(hidden, layer.w_ff1.t(), layer.b_ff1)), layer.w_ff2.t(), layer.b_ff2)


def ff_module_gelu_einsum(hidden, layer):
    act = torch.nn.GELU()
    h = act(torch.einsum("bld,df->blf", hidden, layer.w_ff1) + layer.b_ff1)
    return torch.einsum("blf,fd->bld", h, layer.w_ff2) + layer.b_ff2


def ff_normal_cdf(hidden, layer):
    h = hidden @ layer.w_ff1 + layer.b_ff1
    phi = torch.distributions.Normal(0.0, 1.0).cdf(h)
    return (h * phi) @ layer.w_ff2 + layer.b_ff2


def ff_addmm_inplace_temp(hidden, layer):
    flat = hidden.reshape(-1, hidden.shape[-1])
    h = torch.addmm(layer.b_ff1, flat, layer.w_ff1)
    h = F.gelu(h)
    out = h @ layer.w_ff2
    out += layer.b_ff2  # in place on its own temporary
    return out.reshape(*hidden.shape[:-1], -1)


# ---------------- mean_pooling mistakes
def mp_all_tokens(hidden, key_mask):
    return F.normalize(hidden.mean(dim=1), dim=-1)


def mp_sum_over_L(hidden, key_mask):
    m = key_mask[..., None].float()
    return F.normalize((hidden * m).sum(1) / hidden.shape[1], dim=-1)


def mp_no_normalize(hidden, key_mask):
    m = key_mask[..., None].to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1)


def mp_normalize_tokens_first(hidden, key_mask):
    m = key_mask[..., None].to(hidden.dtype)
    h = F.normalize(hidden, dim=-1)
    return (h * m).sum(1) / m.sum(1)


def mp_normalize_dim0(hidden, key_mask):
    m = key_mask[..., None].to(hidden.dtype)
    return F.normalize((hidden * m).sum(1) / m.sum(1), dim=0)


def mp_max(hidden, key_mask):
    h = hidden.masked_fill(~key_mask[..., None], float("-inf"))
    return F.normalize(h.amax(dim=1), dim=-1)


def mp_count_whole_batch(hidden, key_mask):
    m = key_mask[..., None].to(hidden.dtype)
    return F.normalize((hidden * m).sum(1) / key_mask.sum(), dim=-1)


def mp_cls(hidden, key_mask):
    return F.normalize(hidden[:, 0], dim=-1)


def mp_inplace(hidden, key_mask):
    hidden *= key_mask[..., None]
    return F.normalize(hidden.sum(1) / key_mask.sum(1, keepdim=True), dim=-1)


def mp_l1(hidden, key_mask):
    m = key_mask[..., None].to(hidden.dtype)
    return F.normalize((hidden * m).sum(1) / m.sum(1), p=1, dim=-1)


def mp_mask_inverted(hidden, key_mask):
    m = (~key_mask)[..., None].to(hidden.dtype)
    return F.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)


def mp_first_row_count(hidden, key_mask):
    # the count of the first sentence for every sentence: right for batch 1
    m = key_mask[..., None].to(hidden.dtype)
    return F.normalize((hidden * m).sum(1) / key_mask[0].sum(), dim=-1)


def mp_last_token(hidden, key_mask):
    last = key_mask.sum(1) - 1
    return F.normalize(hidden[torch.arange(hidden.shape[0]), last], dim=-1)


# ---------------- mean_pooling variants
def mp_masked_fill(hidden, key_mask):
    s = hidden.masked_fill(~key_mask.unsqueeze(-1), 0.0).sum(dim=1)
    n = key_mask.sum(dim=1, keepdim=True).clamp(min=1)
    mean = s / n
    return mean / mean.norm(dim=-1, keepdim=True)


def mp_einsum(hidden, key_mask):
    m = key_mask.to(hidden.dtype)
    mean = torch.einsum("bld,bl->bd", hidden, m) / m.sum(-1, keepdim=True)
    return mean / torch.linalg.vector_norm(mean, dim=-1, keepdim=True).clamp(min=1e-12)


def mp_loop(hidden, key_mask):
    rows = []
    for b in range(hidden.shape[0]):
        mean = hidden[b][key_mask[b]].mean(dim=0)
        rows.append(mean / mean.norm())
    return torch.stack(rows)


def mp_float64(hidden, key_mask):
    m = key_mask.double().unsqueeze(-1)
    mean = (hidden.double() * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
    return F.normalize(mean, dim=-1).to(hidden.dtype)


def mp_where_sum_then_normalize(hidden, key_mask):
    # the 1/n cancels in the normalisation: sum of real tokens, then normalise
    s = torch.where(key_mask[..., None], hidden, torch.zeros((), dtype=hidden.dtype)).sum(1)
    return F.normalize(s, dim=-1)


MISTAKES_12 = {
    "encoder_self_attention": [
        esa_no_bias,
        esa_scale_d_model,
        esa_mask_ignored,
        esa_mask_on_queries,
        esa_no_output_bias,
        esa_residual_added,
        esa_split_no_transpose,
        esa_mask_inverted,
        esa_post_layernorm,
        esa_weights_transposed,
        esa_additive_mask_finite,
        esa_mask_first_sentence,
        esa_softmax_over_queries,
    ],
    "encoder_feed_forward": [
        ff_tanh,
        ff_relu,
        ff_residual,
        ff_no_b2,
        ff_gelu_twice,
        ff_layernorm,
        ff_bias_after_gelu,
        ff_sigmoid_gelu,
        ff_erf_wrong_sqrt,
        ff_silu,
        ff_inplace_gelu_on_input,
        ff_half_gelu,
    ],
    "mean_pooling": [
        mp_all_tokens,
        mp_sum_over_L,
        mp_no_normalize,
        mp_normalize_tokens_first,
        mp_normalize_dim0,
        mp_max,
        mp_count_whole_batch,
        mp_cls,
        mp_inplace,
        mp_l1,
        mp_mask_inverted,
        mp_first_row_count,
        mp_last_token,
    ],
}
VARIANTS_12 = {
    "encoder_self_attention": [esa_einsum, esa_flinear, esa_fused_qkv, esa_float64, esa_bert_additive],
    "encoder_feed_forward": [ff_erf, ff_flinear, ff_module_gelu_einsum, ff_normal_cdf, ff_addmm_inplace_temp],
    "mean_pooling": [mp_masked_fill, mp_einsum, mp_loop, mp_float64, mp_where_sum_then_normalize],
}


def mp_renormalise_mean_of_unit_tokens(hidden, key_mask):
    m = key_mask[..., None].to(hidden.dtype)
    h = F.normalize(hidden, dim=-1)
    return F.normalize((h * m).sum(1) / m.sum(1), dim=-1)


def mp_boolean_index_flattens_batch(hidden, key_mask):
    # hidden[key_mask] stacks the real tokens of every sentence: one mean for the whole batch
    return F.normalize(hidden[key_mask].mean(dim=0, keepdim=True), dim=-1)


# dividing by L, by the whole batch's count or by the first sentence's count only rescales each row by a
# positive number, which the final normalisation cancels: these are correct, not mistakes
MISTAKES_12["mean_pooling"] = [
    f for f in MISTAKES_12["mean_pooling"] if f not in (mp_sum_over_L, mp_count_whole_batch, mp_first_row_count)
]
MISTAKES_12["mean_pooling"] += [mp_renormalise_mean_of_unit_tokens, mp_boolean_index_flattens_batch]
VARIANTS_12["mean_pooling"] += [mp_sum_over_L, mp_count_whole_batch, mp_first_row_count]


# ---------------------------------------------------------------- lesson 12b


def _qkv(hidden, layer, n_heads):
    return (
        split_heads(hidden @ layer.w_q + layer.b_q, n_heads),
        split_heads(hidden @ layer.w_k + layer.b_k, n_heads),
        split_heads(hidden @ layer.w_v + layer.b_v, n_heads),
    )


def esa_weights_zeroed_after_softmax(hidden, layer, key_mask, n_heads):
    q, k, v = _qkv(hidden, layer, n_heads)
    w = torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), -1) * key_mask[:, None, None, :]
    return merge_heads(w @ v) @ layer.w_o + layer.b_o, w


def esa_pair_mask_zero_rows(hidden, layer, key_mask, n_heads):
    # also masks the padded queries (pair mask), with the course's masked_attention (zeros there)
    q, k, v = _qkv(hidden, layer, n_heads)
    pair = key_mask[:, None, :, None] & key_mask[:, None, None, :]
    h, w = masked_attention(q, k, v, pair)
    return merge_heads(h) @ layer.w_o + layer.b_o, w


def esa_pair_mask_nan_rows(hidden, layer, key_mask, n_heads):
    # also masks the padded queries with its own softmax: NaN in the padded rows only
    q, k, v = _qkv(hidden, layer, n_heads)
    pair = key_mask[:, None, :, None] & key_mask[:, None, None, :]
    s = (q @ k.mT / math.sqrt(q.shape[-1])).masked_fill(~pair, float("-inf"))
    w = torch.softmax(s, -1)
    return merge_heads(w @ v) @ layer.w_o + layer.b_o, w


def esa_fsdpa_weights_separately(hidden, layer, key_mask, n_heads):
    q, k, v = _qkv(hidden, layer, n_heads)
    m = key_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
    w = torch.softmax((q @ k.mT / math.sqrt(q.shape[-1])).masked_fill(~m, float("-inf")), -1)
    return merge_heads(out) @ layer.w_o + layer.b_o, w


def mp_nan_safe_clamp(hidden, key_mask):
    m = key_mask.unsqueeze(-1).type_as(hidden)
    summed = torch.sum(hidden * m, 1)
    counts = torch.clamp(m.sum(1), min=1e-9)
    return F.normalize(summed / counts, p=2, dim=1)


MISTAKES_12B = {"encoder_self_attention": [esa_weights_zeroed_after_softmax, esa_pair_mask_nan_rows]}
VARIANTS_12B = {
    "encoder_self_attention": [esa_pair_mask_zero_rows, esa_fsdpa_weights_separately],
    "mean_pooling": [mp_nan_safe_clamp],
}


# ---------------------------------------------------------------- lesson naive


def _naive_softmax(s):
    e = torch.exp(s)
    return e / e.sum(-1, keepdim=True)


def ca_naive_exp(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    q = ac.split_heads(decoder_states @ w_q, n_heads)
    k = ac.split_heads(encoder_states @ w_k, n_heads)
    v = ac.split_heads(encoder_states @ w_v, n_heads)
    s = q @ k.mT / math.sqrt(q.shape[-1])
    if encoder_mask is not None:
        s = s.masked_fill(~encoder_mask[:, None, None, :], float("-inf"))
    w = _naive_softmax(s)
    return ac.merge_heads(w @ v) @ w_o, w


def kv_naive_exp(q_new, k_new, v_new, k_cache, v_cache, length):
    T, d = q_new.shape[-2], q_new.shape[-1]
    pos = torch.arange(length, length + T)
    q, k = apply_rope(q_new, pos), apply_rope(k_new, pos)
    keys = torch.cat([k_cache[:, :, :length], k], dim=-2)
    values = torch.cat([v_cache[:, :, :length], v_new], dim=-2)
    g = q.shape[1] // keys.shape[1]
    s = q @ keys.repeat_interleave(g, 1).mT / math.sqrt(d)
    s = s.masked_fill(~causal_mask(length + T)[-T:], float("-inf"))
    return _naive_softmax(s) @ values.repeat_interleave(g, 1), keys, values


def bs_naive_exp(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    L, S = q.shape[-2], k.shape[-2]
    sc = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    outs = []
    for qb in range(layout.shape[0]):
        qi = torch.arange(qb * block_size, min(L, (qb + 1) * block_size))
        kbs = layout[qb].nonzero().flatten().tolist()
        if not kbs:
            outs.append(torch.zeros(*q.shape[:-2], len(qi), v.shape[-1], dtype=q.dtype))
            continue
        ki = torch.cat([torch.arange(kb * block_size, min(S, (kb + 1) * block_size)) for kb in kbs])
        ok = torch.ones(len(qi), len(ki), dtype=torch.bool)
        if causal:
            ok = ok & (ki[None, :] <= qi[:, None])
        if mask_fn is not None:
            ok = ok & mask_fn(qi[:, None], ki[None, :])
        e = torch.exp(q[..., qi, :] @ k[..., ki, :].mT * sc) * ok
        den = e.sum(-1, keepdim=True)
        outs.append(torch.where(den > 0, e / den, torch.zeros_like(e)) @ v[..., ki, :])
    return torch.cat(outs, dim=-2)


def esa_naive_exp(hidden, layer, key_mask, n_heads):
    q = split_heads(hidden @ layer.w_q + layer.b_q, n_heads)
    k = split_heads(hidden @ layer.w_k + layer.b_k, n_heads)
    v = split_heads(hidden @ layer.w_v + layer.b_v, n_heads)
    s = (q @ k.mT / math.sqrt(q.shape[-1])).masked_fill(~key_mask[:, None, None, :], float("-inf"))
    w = _naive_softmax(s)
    return merge_heads(w @ v) @ layer.w_o + layer.b_o, w


MISTAKES_NAIVE = {
    "cross_attention": [ca_naive_exp],
    "cached_attention_step": [kv_naive_exp],
    "block_sparse_attention": [bs_naive_exp],
    "encoder_self_attention": [esa_naive_exp],
}
VARIANTS_NAIVE: dict[Any, Any] = {}


# ---------------------------------------------------------------- lesson 09c2


def kv_write_in_place_when_room(q_new, k_new, v_new, k_cache, v_cache, length):
    T = q_new.shape[-2]
    pos = torch.arange(length, length + T)
    q, k = apply_rope(q_new, pos), apply_rope(k_new, pos)
    if k_cache.shape[-2] >= length + T:
        k_cache[:, :, length : length + T] = k
        v_cache[:, :, length : length + T] = v_new
        keys, values = k_cache[:, :, : length + T], v_cache[:, :, : length + T]
    else:
        keys = torch.cat([k_cache[:, :, :length], k], dim=-2)
        values = torch.cat([v_cache[:, :, :length], v_new], dim=-2)
    return grouped_query_attention(q, keys, values, causal_mask(length + T)[-T:]), keys, values


MISTAKES_09C2 = {"cached_attention_step": [kv_write_in_place_when_room]}
VARIANTS_09C2: dict[Any, Any] = {}


def _cases(*tables: dict[str, list[Callable[..., Any]]]) -> list[Any]:
    return [
        pytest.param(name, fn, id=f"{name}-{fn.__name__}")
        for table in tables
        for name, fns in table.items()
        for fn in fns
    ]


MISTAKES = _cases(
    MISTAKES_07,
    MISTAKES_08,
    MISTAKES_08B,
    MISTAKES_09,
    MISTAKES_09B,
    MISTAKES_10,
    MISTAKES_10B,
    MISTAKES_12,
    MISTAKES_12B,
    MISTAKES_NAIVE,
    MISTAKES_09C2,
)
VARIANTS = _cases(
    VARIANTS_07,
    VARIANTS_08,
    VARIANTS_08B,
    VARIANTS_09,
    VARIANTS_09B,
    VARIANTS_10,
    VARIANTS_10B,
    VARIANTS_12,
    VARIANTS_12B,
    VARIANTS_NAIVE,
    VARIANTS_09C2,
)


def test_audit_has_enough_per_exercise() -> None:
    for tables, least in ((MISTAKES, 8), (VARIANTS, 4)):
        counts: dict[str, int] = {}
        for param in tables:
            counts[param.values[0]] = counts.get(param.values[0], 0) + 1
        assert len(counts) == 10 and min(counts.values()) >= least, counts


@pytest.mark.parametrize(("name", "fn"), VARIANTS)
def test_correct_variant_passes(name: str, fn: Callable[..., Any]) -> None:
    result = run_check(get_exercise(name), fn)
    assert result.status is Status.PASSED, result.message


@pytest.mark.parametrize(("name", "fn"), MISTAKES)
def test_learner_mistake_fails(name: str, fn: Callable[..., Any]) -> None:
    result = run_check(get_exercise(name), fn)
    assert result.status is Status.FAILED, f"{fn.__name__} was graded {result.status}: {result.message}"
    assert "the check itself failed" not in result.message, result.message


def test_float16_angles_fail_far_into_the_sequence() -> None:
    """RoPE angles computed in float16 are right for the first few positions only: the case at
    positions ~4000 must catch them, with the hint that names the precision."""
    result = run_check(get_exercise("apply_rope"), rope_half_precision_angles)
    assert result.status is Status.FAILED and "positions = tensor([1000, 1001, 2047, 4000])" in result.message
    assert "float16 holds about 3 significant digits" in result.message
