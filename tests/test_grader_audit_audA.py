"""Grader audit (lessons 02-06): learner code written from the exercise notebooks alone.

Every mistake below is wrong by the lesson's specification and must FAIL; every variant is correct
code spelled as learners spell it and must PASS. Each function is self-contained (torch, math,
attention_course only), graded in-process with ``run_check``.

The course's check also takes gradients through the learner's function (a ``check_grad`` case in
every exercise) though no exercise prompt says so; code that writes in place into a tensor autograd
saved (exps /= ..., weights[weights.isnan()] = 0, .nan_to_num_()) therefore fails, with a hint
naming the in-place operation. Those are listed with the mistakes ("in place, autograd").
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

import attention_course as ac
from attention_course.grading import get_exercise, run_check

# ruff: noqa: E741, N806

# =============================================================== qkv_projection


def qkv_m_transposed(x, w_q, w_k, w_v):
    return x @ w_q.T, x @ w_k.T, x @ w_v.T


def qkv_m_f_linear(x, w_q, w_k, w_v):
    return F.linear(x, w_q), F.linear(x, w_k), F.linear(x, w_v)


def qkv_m_v_uses_wk(x, w_q, w_k, w_v):
    return x @ w_q, x @ w_k, x @ w_k


def qkv_m_order_qvk(x, w_q, w_k, w_v):
    return x @ w_q, x @ w_v, x @ w_k


def qkv_m_unpack_3d(x, w_q, w_k, w_v):
    b, l, d = x.shape
    flat = x.reshape(b * l, d)
    return tuple((flat @ w).reshape(b, l, -1) for w in (w_q, w_k, w_v))


def qkv_m_bmm(x, w_q, w_k, w_v):
    return tuple(torch.bmm(x, w.expand(x.shape[0], *w.shape)) for w in (w_q, w_k, w_v))


def qkv_m_scaled_q(x, w_q, w_k, w_v):
    q = x @ w_q / math.sqrt(w_q.shape[-1])
    return q, x @ w_k, x @ w_v


def qkv_m_squeeze_batch(x, w_q, w_k, w_v):
    x2 = x.squeeze(0)
    return tuple((x2 @ w).unsqueeze(0) for w in (w_q, w_k, w_v))


def qkv_m_shared_first_batch(x, w_q, w_k, w_v):
    # projects the first sequence and broadcasts it to the batch
    x0 = x.reshape(-1, *x.shape[-2:])[0]
    return tuple((x0 @ w).expand(*x.shape[:-1], w.shape[-1]) for w in (w_q, w_k, w_v))


def qkv_m_float32(x, w_q, w_k, w_v):
    # float64 inputs give float32 results: the reference (and the hint of the catalogue) keep the dtype
    return tuple(x.float() @ w.float() for w in (w_q, w_k, w_v))


QKV_MISTAKES = [
    qkv_m_transposed,
    qkv_m_f_linear,
    qkv_m_v_uses_wk,
    qkv_m_order_qvk,
    qkv_m_unpack_3d,
    qkv_m_bmm,
    qkv_m_scaled_q,
    qkv_m_squeeze_batch,
    qkv_m_shared_first_batch,
    qkv_m_float32,
]


def qkv_v_matmul_loop(x, w_q, w_k, w_v):
    out = []
    for w in (w_q, w_k, w_v):
        out.append(torch.matmul(x, w))
    return tuple(out)


def qkv_v_concat_split(x, w_q, w_k, w_v):
    w = torch.cat([w_q, w_k, w_v], dim=-1)
    qkv = x @ w
    d_k = w_q.shape[1]
    q, k, v = torch.split(qkv, [d_k, d_k, w_v.shape[1]], dim=-1)
    return q, k, v


def qkv_v_flatten(x, w_q, w_k, w_v):
    flat = x.reshape(-1, x.shape[-1])
    return tuple((flat @ w).reshape(*x.shape[:-1], w.shape[-1]) for w in (w_q, w_k, w_v))


def qkv_v_tensordot(x, w_q, w_k, w_v):
    return tuple(torch.tensordot(x, w, dims=([-1], [0])) for w in (w_q, w_k, w_v))


def qkv_v_broadcast_sum(x, w_q, w_k, w_v):
    return tuple((x.unsqueeze(-1) * w).sum(-2) for w in (w_q, w_k, w_v))


def qkv_v_list(x, w_q, w_k, w_v):
    # a list instead of a tuple: unpacks the same way
    return [x @ w_q, x @ w_k, x @ w_v]


QKV_VARIANTS = [qkv_v_list, qkv_v_matmul_loop, qkv_v_concat_split, qkv_v_flatten, qkv_v_tensordot, qkv_v_broadcast_sum]

# =============================================================== attention_scores


def sc_m_dot_T(q, k):
    return q @ k.T if k.dim() == 2 else q @ k.permute(*range(k.dim() - 1, -1, -1))


def sc_m_k_at_q(q, k):
    return k @ q.transpose(-2, -1)


def sc_m_transpose01(q, k):
    return q @ k.transpose(0, 1)


def sc_m_scaled(q, k):
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


def sc_m_einsum_ji(q, k):
    return torch.einsum("...id,...jd->...ji", q, k)


def sc_m_bmm(q, k):
    return torch.bmm(q, k.transpose(1, 2))


def sc_m_flatten_batch(q, k):
    qf = q.reshape(-1, *q.shape[-2:])
    kf = k.reshape(-1, *k.shape[-2:])
    return (qf @ kf.transpose(-2, -1)).reshape(*q.shape[:-1], k.shape[-2])


def sc_m_elementwise(q, k):
    return (q * k).sum(-1)


def sc_m_cosine(q, k):
    return F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)


def sc_m_softmax(q, k):
    return torch.softmax(q @ k.transpose(-2, -1), dim=-1)


def sc_m_einsum_3d(q, k):
    return torch.einsum("bld,bsd->bls", q, k)


SCORES_MISTAKES = [
    sc_m_dot_T,
    sc_m_k_at_q,
    sc_m_transpose01,
    sc_m_scaled,
    sc_m_einsum_ji,
    sc_m_bmm,
    sc_m_flatten_batch,
    sc_m_elementwise,
    sc_m_cosine,
    sc_m_softmax,
    sc_m_einsum_3d,
]


def sc_v_broadcast_sum(q, k):
    return (q.unsqueeze(-2) * k.unsqueeze(-3)).sum(-1)


def sc_v_permute_general(q, k):
    dims = list(range(k.dim()))
    dims[-1], dims[-2] = dims[-2], dims[-1]
    return torch.matmul(q, k.permute(*dims))


def sc_v_float64(q, k):
    return (q.double() @ k.double().transpose(-2, -1)).to(q.dtype)


def sc_v_loop_2d(q, k):
    # broadcast the batch axes first, then a loop over the flattened batch
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    qb = q.expand(*batch, *q.shape[-2:]).reshape(-1, *q.shape[-2:])
    kb = k.expand(*batch, *k.shape[-2:]).reshape(-1, *k.shape[-2:])
    out = (
        torch.stack([a @ b.T for a, b in zip(qb, kb, strict=True)])
        if qb.shape[0]
        else qb.new_zeros(0, q.shape[-2], k.shape[-2])
    )
    return out.reshape(*batch, q.shape[-2], k.shape[-2])


def sc_v_transpose_k_q(q, k):
    return (k @ q.transpose(-1, -2)).transpose(-1, -2)


SCORES_VARIANTS = [sc_v_broadcast_sum, sc_v_permute_general, sc_v_float64, sc_v_loop_2d, sc_v_transpose_k_q]

# =============================================================== scaled_attention_scores


def ss_m_divide_dk(q, k, scale=None):
    s = q @ k.transpose(-2, -1)
    return s / q.shape[-1] if scale is None else s * scale


def ss_m_times_sqrt(q, k, scale=None):
    s = q @ k.transpose(-2, -1)
    return s * math.sqrt(q.shape[-1]) if scale is None else s * scale


def ss_m_dim1(q, k, scale=None):
    s = q @ k.transpose(-2, -1)
    return s / math.sqrt(q.size(1)) if scale is None else s * scale


def ss_m_seq_len(q, k, scale=None):
    s = q @ k.transpose(-2, -1)
    return s / math.sqrt(k.shape[-2]) if scale is None else s * scale


def ss_m_ignore_scale(q, k, scale=None):
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


def ss_m_divide_by_scale(q, k, scale=None):
    s = q @ k.transpose(-2, -1)
    return s / math.sqrt(q.shape[-1]) if scale is None else s / scale


def ss_m_both(q, k, scale=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return s if scale is None else s * scale


def ss_m_falsy_scale(q, k, scale=None):
    scale = scale or 1 / math.sqrt(q.shape[-1])
    return q @ k.transpose(-2, -1) * scale


def ss_m_precedence(q, k, scale=None):
    if scale is None:
        scale = q.shape[-1] ** -1 / 2
    return q @ k.transpose(-2, -1) * scale


def ss_m_inplace_q(q, k, scale=None):
    q /= math.sqrt(q.shape[-1]) if scale is None else 1 / scale
    return q @ k.transpose(-2, -1)


def ss_m_int_sqrt(q, k, scale=None):
    if scale is None:
        scale = 1 / math.isqrt(q.shape[-1])
    return q @ k.transpose(-2, -1) * scale


SCALED_MISTAKES = [
    ss_m_divide_dk,
    ss_m_times_sqrt,
    ss_m_dim1,
    ss_m_seq_len,
    ss_m_ignore_scale,
    ss_m_divide_by_scale,
    ss_m_both,
    ss_m_falsy_scale,
    ss_m_precedence,
    ss_m_inplace_q,
    ss_m_int_sqrt,
]


def ss_v_prescale_q(q, k, scale=None):
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return (q * s) @ k.transpose(-2, -1)


def ss_v_sqrt_both(q, k, scale=None):
    s = q.shape[-1] ** -0.5 if scale is None else scale
    r = math.sqrt(s) if s >= 0 else None
    if r is None:
        return (q @ k.mT) * s
    return (q * r) @ (k * r).mT


def ss_v_torch_sqrt(q, k, scale=None):
    scores = torch.matmul(q, k.transpose(-1, -2))
    if scale is not None:
        return scores * scale
    return scores / torch.sqrt(torch.tensor(q.shape[-1], dtype=scores.dtype))


def ss_v_reuse_scores(q, k, scale=None):
    from attention_course import attention_scores

    scores = attention_scores(q, k)
    return scores.mul(scale if scale is not None else 1 / math.sqrt(q.shape[-1]))


def ss_v_baddbmm_like(q, k, scale=None):
    s = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    out = q @ k.transpose(-2, -1)
    out.mul_(s)  # in place on its own temporary
    return out


SCALED_VARIANTS = [ss_v_prescale_q, ss_v_sqrt_both, ss_v_torch_sqrt, ss_v_reuse_scores, ss_v_baddbmm_like]

# =============================================================== softmax


def sm_m_no_max(x, dim=-1, temperature=1.0):
    e = torch.exp(x / temperature)
    return e / e.sum(dim=dim, keepdim=True)


def sm_m_global_max(x, dim=-1, temperature=1.0):
    z = x / temperature
    e = torch.exp(z - z.max())
    return e / e.sum(dim=dim, keepdim=True)


def sm_m_sum_all(x, dim=-1, temperature=1.0):
    z = x / temperature
    e = torch.exp(z - z.amax(dim=dim, keepdim=True))
    return e / e.sum()


def sm_m_temp_times(x, dim=-1, temperature=1.0):
    z = x * temperature
    e = torch.exp(z - z.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def sm_m_untempered_max(x, dim=-1, temperature=1.0):
    e = torch.exp(x / temperature - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def sm_m_last_dim(x, dim=-1, temperature=1.0):
    z = x / temperature
    e = torch.exp(z - z.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def sm_m_no_keepdim(x, dim=-1, temperature=1.0):
    z = x / temperature
    e = torch.exp(z - z.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim)


def sm_m_float64_out(x, dim=-1, temperature=1.0):
    z = x.double() / temperature
    e = torch.exp(z - z.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def sm_m_inplace(x, dim=-1, temperature=1.0):
    x /= temperature
    x -= x.amax(dim=dim, keepdim=True)
    e = x.exp()
    return e / e.sum(dim=dim, keepdim=True)


def sm_m_clamp(x, dim=-1, temperature=1.0):
    e = torch.exp(torch.clamp(x / temperature, max=80.0))
    return e / e.sum(dim=dim, keepdim=True)


def sm_m_mean_shift(x, dim=-1, temperature=1.0):
    z = x / temperature
    e = torch.exp(z - z.mean(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def sm_m_max_no_temp_div_after(x, dim=-1, temperature=1.0):
    # divides the exponentials by the temperature instead of the scores (it cancels out)
    e = torch.exp(x - x.amax(dim=dim, keepdim=True)) / temperature
    return e / e.sum(dim=dim, keepdim=True)


def sm_m_log_softmax(x, dim=-1, temperature=1.0):
    z = x / temperature
    z = z - z.amax(dim=dim, keepdim=True)
    return z - z.exp().sum(dim=dim, keepdim=True).log()


def sm_m_ninf_to_zero(x, dim=-1, temperature=1.0):
    z = torch.nan_to_num(x / temperature, neginf=0.0)
    e = torch.exp(z - z.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def sm_m_half_exp(x, dim=-1, temperature=1.0):
    # computes in float16 to "save memory"
    z = x.half() / temperature
    e = torch.exp(z - z.amax(dim=dim, keepdim=True))
    return (e / e.sum(dim=dim, keepdim=True)).to(x.dtype)


SOFTMAX_MISTAKES = [
    sm_m_no_max,
    sm_m_global_max,
    sm_m_sum_all,
    sm_m_temp_times,
    sm_m_untempered_max,
    sm_m_last_dim,
    sm_m_no_keepdim,
    sm_m_float64_out,
    sm_m_inplace,
    sm_m_clamp,
    sm_m_mean_shift,
    sm_m_log_softmax,
    sm_m_ninf_to_zero,
    sm_m_half_exp,
    sm_m_max_no_temp_div_after,
]


def sm_v_f_softmax(x, dim=-1, temperature=1.0):
    return F.softmax(x / temperature, dim=dim)


def sm_v_max_values(x, dim=-1, temperature=1.0):
    z = torch.div(x, temperature)
    m, _ = torch.max(z, dim=dim, keepdim=True)
    e = torch.exp(z - m)
    return e / torch.sum(e, dim=dim, keepdim=True)


def sm_v_log_domain(x, dim=-1, temperature=1.0):
    z = x / temperature
    return (z - z.logsumexp(dim, keepdim=True)).exp()


def sm_v_float32_inside(x, dim=-1, temperature=1.0):
    z = x.float() / temperature
    z = z - z.amax(dim, keepdim=True)
    e = z.exp()
    return (e / e.sum(dim, keepdim=True)).to(x.dtype)


def sm_m_exp_in_place_transposed(x, dim=-1, temperature=1.0):
    z = x.transpose(dim, -1) / temperature
    z = z - z.max(-1, keepdim=True).values
    z.exp_()  # in place on its own temporary
    z /= z.sum(-1, keepdim=True)
    return z.transpose(dim, -1)


def sm_v_temper_after_max(x, dim=-1, temperature=1.0):
    e = torch.exp((x - x.amax(dim=dim, keepdim=True)) / temperature)
    return e / e.sum(dim=dim, keepdim=True)


def sm_v_reciprocal(x, dim=-1, temperature=1.0):
    z = x * (1.0 / temperature)
    e = (z - z.amax(dim=dim, keepdim=True)).exp()
    return e * e.sum(dim=dim, keepdim=True).reciprocal()


SOFTMAX_VARIANTS = [
    sm_v_f_softmax,
    sm_v_max_values,
    sm_v_log_domain,
    sm_v_float32_inside,
    sm_v_temper_after_max,
    sm_v_reciprocal,
]

# =============================================================== causal_mask


def cm_m_triu(n_queries, n_keys=None):
    n_keys = n_queries if n_keys is None else n_keys
    return torch.ones(n_queries, n_keys, dtype=torch.bool).triu()


def cm_m_strict(n_queries, n_keys=None):
    n_keys = n_queries if n_keys is None else n_keys
    return torch.ones(n_queries, n_keys, dtype=torch.bool).tril(-1)


def cm_m_peek_next(n_queries, n_keys=None):
    n_keys = n_queries if n_keys is None else n_keys
    return torch.ones(n_queries, n_keys, dtype=torch.bool).tril(1)


def cm_m_bottom_right(n_queries, n_keys=None):
    n_keys = n_queries if n_keys is None else n_keys
    return torch.ones(n_queries, n_keys, dtype=torch.bool).tril(n_keys - n_queries)


def cm_m_ignore_nkeys(n_queries, n_keys=None):
    return torch.ones(n_queries, n_queries, dtype=torch.bool).tril()


def cm_m_float(n_queries, n_keys=None):
    n_keys = n_queries if n_keys is None else n_keys
    return torch.tril(torch.ones(n_queries, n_keys))


def cm_m_inverted(n_queries, n_keys=None):
    n_keys = n_queries if n_keys is None else n_keys
    return ~torch.ones(n_queries, n_keys, dtype=torch.bool).tril()


def cm_m_slice_square(n_queries, n_keys=None):
    n_keys = n_queries if n_keys is None else n_keys
    n = n_queries
    return torch.ones(n, n, dtype=torch.bool).tril()[:n_queries, :n_keys]


def cm_m_swapped_shape(n_queries, n_keys=None):
    n_keys = n_queries if n_keys is None else n_keys
    return torch.arange(n_queries)[None, :] >= torch.arange(n_keys)[:, None]


def cm_m_int64(n_queries, n_keys=None):
    n_keys = n_queries if n_keys is None else n_keys
    return (torch.arange(n_keys)[None, :] <= torch.arange(n_queries)[:, None]).long()


def cm_m_strict_arange(n_queries, n_keys=None):
    n_keys = n_queries if n_keys is None else n_keys
    return torch.arange(n_keys)[None, :] < torch.arange(n_queries)[:, None]


CAUSAL_MISTAKES = [
    cm_m_triu,
    cm_m_strict,
    cm_m_peek_next,
    cm_m_bottom_right,
    cm_m_ignore_nkeys,
    cm_m_float,
    cm_m_inverted,
    cm_m_slice_square,
    cm_m_swapped_shape,
    cm_m_int64,
    cm_m_strict_arange,
]


def cm_v_loops(n_queries, n_keys=None):
    if n_keys is None:
        n_keys = n_queries
    m = torch.zeros(n_queries, n_keys, dtype=torch.bool)
    for i in range(n_queries):
        for j in range(n_keys):
            if j <= i:
                m[i, j] = True
    return m


def cm_v_triu_not(n_queries, n_keys=None):
    n_keys = n_queries if n_keys is None else n_keys
    return ~torch.ones(n_queries, n_keys, dtype=torch.bool).triu(1)


def cm_v_tril_indices(n_queries, n_keys=None):
    n_keys = n_queries if n_keys is None else n_keys
    m = torch.zeros(n_queries, n_keys, dtype=torch.bool)
    rows, cols = torch.tril_indices(n_queries, n_keys)
    m[rows, cols] = True
    return m


def cm_v_float_then_bool(n_queries, n_keys=None):
    n_keys = n_keys if n_keys is not None else n_queries
    return torch.tril(torch.ones((n_queries, n_keys), dtype=torch.float32)) > 0


def cm_v_big_then_slice(n_queries, n_keys=None):
    n_keys = n_queries if n_keys is None else n_keys
    n = max(n_queries, n_keys)
    return torch.ones(n, n, dtype=torch.bool).tril()[:n_queries, :n_keys]


def cm_v_ge(n_queries, n_keys=None):
    n_keys = n_queries if n_keys is None else n_keys
    i = torch.arange(n_queries).unsqueeze(1)
    j = torch.arange(n_keys).unsqueeze(0)
    return torch.ge(i, j)


CAUSAL_VARIANTS = [cm_v_loops, cm_v_triu_not, cm_v_tril_indices, cm_v_float_then_bool, cm_v_big_then_slice, cm_v_ge]

# =============================================================== padding_mask


def pm_m_le(lengths, max_len=None):
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len)[None, :] <= lengths[:, None]


def pm_m_inverted(lengths, max_len=None):
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len)[None, :] >= lengths[:, None]


def pm_m_ignore_max_len(lengths, max_len=None):
    return torch.arange(int(lengths.max()))[None, :] < lengths[:, None]


def pm_m_default_batch(lengths, max_len=None):
    max_len = len(lengths) if max_len is None else max_len
    return torch.arange(max_len)[None, :] < lengths[:, None]


def pm_m_long(lengths, max_len=None):
    max_len = int(lengths.max()) if max_len is None else max_len
    return (torch.arange(max_len)[None, :] < lengths[:, None]).long()


def pm_m_transposed(lengths, max_len=None):
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len)[:, None] < lengths[None, :]


def pm_m_left_padding(lengths, max_len=None):
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len)[None, :] >= (max_len - lengths)[:, None]


def pm_m_no_unsqueeze(lengths, max_len=None):
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len) < lengths  # no [:, None]: the right shape for one sequence only


def pm_m_unsqueeze_inplace(lengths, max_len=None):
    max_len = int(lengths.max()) if max_len is None else max_len
    lengths.unsqueeze_(1)
    return torch.arange(max_len) < lengths


def pm_m_float_loop(lengths, max_len=None):
    max_len = int(lengths.max()) if max_len is None else max_len
    m = torch.zeros(len(lengths), max_len)
    for b, n in enumerate(lengths.tolist()):
        m[b, :n] = 1
    return m


def pm_m_arange_from1(lengths, max_len=None):
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(1, max_len + 1)[None, :] < lengths[:, None]


PADDING_MISTAKES = [
    pm_m_le,
    pm_m_inverted,
    pm_m_ignore_max_len,
    pm_m_default_batch,
    pm_m_long,
    pm_m_transposed,
    pm_m_left_padding,
    pm_m_no_unsqueeze,
    pm_m_unsqueeze_inplace,
    pm_m_float_loop,
    pm_m_arange_from1,
]


def pm_v_loop(lengths, max_len=None):
    if max_len is None:
        max_len = int(lengths.max().item())
    m = torch.zeros(lengths.shape[0], max_len, dtype=torch.bool)
    for b in range(lengths.shape[0]):
        m[b, : int(lengths[b])] = True
    return m


def pm_v_lt_device(lengths, max_len=None):
    if max_len is None:
        max_len = lengths.max()
    positions = torch.arange(max_len, device=lengths.device)
    return torch.lt(positions.unsqueeze(0), lengths.unsqueeze(1))


def pm_v_expand(lengths, max_len=None):
    max_len = max_len if max_len is not None else int(max(lengths))
    pos = torch.arange(max_len).expand(len(lengths), max_len)
    return pos < lengths.view(-1, 1)


def pm_v_cumsum(lengths, max_len=None):
    max_len = int(lengths.max()) if max_len is None else max_len
    ones = torch.ones(len(lengths), max_len, dtype=torch.long)
    return ones.cumsum(-1) <= lengths[:, None]


def pm_v_stack(lengths, max_len=None):
    max_len = int(lengths.max()) if max_len is None else max_len
    rows = [torch.arange(max_len) < int(n) for n in lengths]
    return torch.stack(rows) if rows else torch.zeros(0, max_len, dtype=torch.bool)


PADDING_VARIANTS = [pm_v_loop, pm_v_lt_device, pm_v_expand, pm_v_cumsum, pm_v_stack]

# =============================================================== masked_attention


def _scores(q, k):
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


def ma_m_no_scale(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.nan_to_num(torch.softmax(s, -1), nan=0.0)
    return w @ v, w


def ma_m_mask_after_softmax(q, k, v, mask=None):
    w = torch.softmax(_scores(q, k), -1)
    if mask is not None:
        w = w * mask
    return w @ v, w


def ma_m_inverted(q, k, v, mask=None):
    s = _scores(q, k)
    if mask is not None:
        s = s.masked_fill(mask, float("-inf"))
    w = torch.nan_to_num(torch.softmax(s, -1), nan=0.0)
    return w @ v, w


def ma_m_nan_rows(q, k, v, mask=None):
    s = _scores(q, k)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.softmax(s, -1)
    return w @ v, w


def ma_m_big_negative(q, k, v, mask=None):
    s = _scores(q, k)
    if mask is not None:
        s = s.masked_fill(~mask, -1e9)
    w = torch.softmax(s, -1)
    return w @ v, w


def ma_m_none_unhandled(q, k, v, mask=None):
    s = _scores(q, k).masked_fill(~mask, float("-inf"))
    w = torch.nan_to_num(torch.softmax(s, -1), nan=0.0)
    return w @ v, w


def ma_m_scale_dv(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(v.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.nan_to_num(torch.softmax(s, -1), nan=0.0)
    return w @ v, w


def ma_m_renorm_after(q, k, v, mask=None):
    # softmax first, then zero the masked weights and renormalise: underflows on extreme scores
    w = torch.softmax(_scores(q, k), -1)
    if mask is not None:
        w = w * mask
        w = torch.nan_to_num(w / w.sum(-1, keepdim=True), nan=0.0)
    return w @ v, w


def ma_m_inplace_q(q, k, v, mask=None):
    q /= math.sqrt(q.shape[-1])
    s = q @ k.transpose(-2, -1)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.nan_to_num(torch.softmax(s, -1), nan=0.0)
    return w @ v, w


def ma_m_out_fixed_weights_nan(q, k, v, mask=None):
    s = _scores(q, k)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.softmax(s, -1)
    return torch.nan_to_num(w @ v, nan=0.0), w


def ma_m_key_mask_assumed(q, k, v, mask=None):
    # always treats the mask as a key mask (B, S) and adds the query axis
    s = _scores(q, k)
    if mask is not None:
        s = s.masked_fill(~mask.unsqueeze(-2), float("-inf"))
    w = torch.nan_to_num(torch.softmax(s, -1), nan=0.0)
    return w @ v, w


def ma_m_softmax_dim_minus2(q, k, v, mask=None):
    s = _scores(q, k)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.nan_to_num(torch.softmax(s, -2), nan=0.0)
    return w @ v, w


def ma_m_zero_fill(q, k, v, mask=None):
    s = _scores(q, k)
    if mask is not None:
        s = s * mask  # zero instead of -inf
    w = torch.softmax(s, -1)
    return w @ v, w


def ma_m_add_mask(q, k, v, mask=None):
    # adds the boolean mask as if it were an additive float mask
    s = _scores(q, k)
    if mask is not None:
        s = s + mask
    w = torch.softmax(s, -1)
    return w @ v, w


MASKED_MISTAKES = [
    ma_m_no_scale,
    ma_m_mask_after_softmax,
    ma_m_inverted,
    ma_m_nan_rows,
    ma_m_big_negative,
    ma_m_none_unhandled,
    ma_m_scale_dv,
    ma_m_renorm_after,
    ma_m_inplace_q,
    ma_m_out_fixed_weights_nan,
    ma_m_key_mask_assumed,
    ma_m_softmax_dim_minus2,
    ma_m_zero_fill,
    ma_m_add_mask,
]


def ma_v_where(q, k, v, mask=None):
    s = torch.einsum("...ld,...sd->...ls", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = torch.where(mask, s, torch.tensor(float("-inf"), dtype=s.dtype))
    w = torch.softmax(s, dim=-1)
    w = torch.where(torch.isnan(w), torch.zeros_like(w), w)
    return torch.matmul(w, v), w


def ma_v_course_softmax(q, k, v, mask=None):
    s = ac.scaled_attention_scores(q, k)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = ac.softmax(s, dim=-1)
    return w @ v, w


def ma_v_any_rows(q, k, v, mask=None):
    s = (q @ k.mT) * q.shape[-1] ** -0.5
    if mask is None:
        w = s.softmax(-1)
        return w @ v, w
    s = s.masked_fill(mask.logical_not(), float("-inf"))
    w = torch.softmax(s, -1)
    has_key = mask.any(-1, keepdim=True)
    w = torch.where(has_key, w, 0.0)
    return w @ v, w


def ma_v_float64(q, k, v, mask=None):
    s = (q.double() @ k.double().transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, -math.inf)
    m = s.amax(-1, keepdim=True)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    e = torch.exp(s - m)
    total = e.sum(-1, keepdim=True)
    w = torch.where(total > 0, e / total.clamp_min(1e-300), torch.zeros_like(e))
    return (w @ v.double()).to(v.dtype), w.to(q.dtype)


def ma_m_nan_to_num_in_place(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1)
    s /= math.sqrt(q.shape[-1])
    if mask is not None:
        s.masked_fill_(~mask, float("-inf"))
    w = F.softmax(s, dim=-1).nan_to_num_(0.0)
    return w @ v, w


def ma_m_course_sdpa(q, k, v, mask=None):  # the course's attention does the exercise's work: refused
    _, w = ac.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    return w @ v, w


MASKED_VARIANTS = [ma_v_where, ma_v_course_softmax, ma_v_any_rows, ma_v_float64]
MASKED_MISTAKES_LATE = [ma_m_course_sdpa]

# =============================================================== split_heads


def sh_m_direct_reshape(x, n_heads):
    b, l, d = x.shape
    return x.reshape(b, n_heads, l, d // n_heads)


def sh_m_interleaved(x, n_heads):
    b, l, d = x.shape
    return x.reshape(b, l, d // n_heads, n_heads).permute(0, 3, 1, 2)


def sh_m_no_transpose(x, n_heads):
    b, l, d = x.shape
    return x.reshape(b, l, n_heads, d // n_heads)


def sh_m_permute_wrong(x, n_heads):
    b, l, d = x.shape
    return x.reshape(b, l, n_heads, d // n_heads).permute(0, 2, 3, 1).reshape(b, n_heads, l, d // n_heads)


def sh_m_stack_dim0(x, n_heads):
    return torch.stack(x.chunk(n_heads, dim=-1), dim=0)


def sh_m_d_from_dim1(x, n_heads):
    d_head = x.shape[1] // n_heads
    return x.reshape(x.shape[0], x.shape[1], n_heads, d_head).transpose(1, 2)


def sh_v_transpose_then_reshape(x, n_heads):
    b, l, d = x.shape
    return x.transpose(1, 2).reshape(b, n_heads, d // n_heads, l).transpose(2, 3)


def sh_m_unflatten_swapped(x, n_heads):
    return x.unflatten(-1, (x.shape[-1] // n_heads, n_heads)).movedim(-1, 1)


def sh_m_batch1(x, n_heads):
    l, d = x.shape[-2:]
    return x.reshape(l, n_heads, d // n_heads).transpose(0, 1).unsqueeze(0)


SPLIT_MISTAKES = [
    sh_m_direct_reshape,
    sh_m_interleaved,
    sh_m_no_transpose,
    sh_m_permute_wrong,
    sh_m_stack_dim0,
    sh_m_d_from_dim1,
    sh_m_unflatten_swapped,
    sh_m_batch1,
]


def sh_v_view(x, n_heads):
    b, l, d = x.shape
    return x.view(b, l, n_heads, d // n_heads).transpose(1, 2)


def sh_v_chunk_stack(x, n_heads):
    return torch.stack(torch.chunk(x, n_heads, dim=-1), dim=1)


def sh_v_unflatten(x, n_heads):
    return x.unflatten(-1, (n_heads, -1)).permute(0, 2, 1, 3)


def sh_v_contiguous(x, n_heads):
    b, l, d = x.shape
    return x.reshape(b, l, n_heads, -1).transpose(1, 2).contiguous()


def sh_v_loop_slices(x, n_heads):
    d_head = x.shape[-1] // n_heads
    return torch.stack([x[..., h * d_head : (h + 1) * d_head] for h in range(n_heads)], dim=1)


def sh_v_einops_like(x, n_heads):
    b, l, d = x.shape
    return x.reshape(b, l, n_heads, d // n_heads).swapaxes(1, 2)


SPLIT_VARIANTS = [
    sh_v_transpose_then_reshape,
    sh_v_view,
    sh_v_chunk_stack,
    sh_v_unflatten,
    sh_v_contiguous,
    sh_v_loop_slices,
    sh_v_einops_like,
]

# =============================================================== merge_heads


def mh_m_no_transpose(x):
    b, h, l, dh = x.shape
    return x.reshape(b, l, h * dh)


def mh_m_interleaved(x):
    b, h, l, dh = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, l, h * dh)


def mh_m_cat_tokens(x):
    return torch.cat(x.unbind(1), dim=1)


def mh_m_wrong_unpack(x):
    b, l, h, dh = x.shape  # wrong order
    return x.transpose(1, 2).reshape(b, l, h * dh)


def mh_m_sum_heads(x):
    return x.sum(1)


def mh_m_transpose23(x):
    b, h, l, dh = x.shape
    return x.transpose(2, 3).reshape(b, l, h * dh)


def mh_m_flatten12(x):
    return x.flatten(1, 2)


def mh_m_view_noncontig(x):
    b, h, l, dh = x.shape
    return x.transpose(1, 2).view(b, l, h * dh)


def mh_m_batch1(x):
    h, l, dh = x.shape[1:]
    return x[0].transpose(0, 1).reshape(l, h * dh).unsqueeze(0)


def mh_m_mean_heads_tiled(x):
    b, h, l, dh = x.shape
    return x.mean(1).repeat(1, 1, h)


MERGE_MISTAKES = [
    mh_m_no_transpose,
    mh_m_interleaved,
    mh_m_cat_tokens,
    mh_m_wrong_unpack,
    mh_m_sum_heads,
    mh_m_transpose23,
    mh_m_flatten12,
    mh_m_view_noncontig,
    mh_m_batch1,
    mh_m_mean_heads_tiled,
]


def mh_v_cat_heads(x):
    return torch.cat(x.unbind(dim=1), dim=-1)


def mh_v_permute_flatten(x):
    return x.permute(0, 2, 1, 3).flatten(2)


def mh_v_contiguous_view(x):
    b, h, l, dh = x.shape
    return x.transpose(1, 2).contiguous().view(b, l, h * dh)


def mh_v_loop(x):
    return torch.cat([x[:, i] for i in range(x.shape[1])], dim=-1)


def mh_v_einsum(x):
    b, h, l, dh = x.shape
    return torch.einsum("bhld->blhd", x).reshape(b, l, -1)


MERGE_VARIANTS = [mh_v_cat_heads, mh_v_permute_flatten, mh_v_contiguous_view, mh_v_loop, mh_v_einsum]

# =============================================================== multi_head_attention


def _proj(x, w, b):
    y = x @ w
    return y if b is None else y + b


def mha_m_no_wo(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    q = ac.split_heads(_proj(query, w_q, b_q), n_heads)
    k = ac.split_heads(_proj(key, w_k, b_k), n_heads)
    v = ac.split_heads(_proj(value, w_v, b_v), n_heads)
    out, w = ac.scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)
    merged = ac.merge_heads(out)
    return merged if b_o is None else merged + b_o, w


def mha_m_scale_dmodel(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    q = ac.split_heads(_proj(query, w_q, b_q), n_heads)
    k = ac.split_heads(_proj(key, w_k, b_k), n_heads)
    v = ac.split_heads(_proj(value, w_v, b_v), n_heads)
    out, w = ac.scaled_dot_product_attention(
        q, k, v, mask, causal=causal, scale=1 / math.sqrt(query.shape[-1]), return_weights=True
    )
    return _proj(ac.merge_heads(out), w_o, b_o), w


def mha_m_ignore_biases(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    q, k, v = (ac.split_heads(t @ w, n_heads) for t, w in ((query, w_q), (key, w_k), (value, w_v)))
    out, w = ac.scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)
    return ac.merge_heads(out) @ w_o, w


def mha_m_bo_before_wo(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    q = ac.split_heads(_proj(query, w_q, b_q), n_heads)
    k = ac.split_heads(_proj(key, w_k, b_k), n_heads)
    v = ac.split_heads(_proj(value, w_v, b_v), n_heads)
    out, w = ac.scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)
    merged = ac.merge_heads(out)
    if b_o is not None:
        merged = merged + b_o
    return merged @ w_o, w


def mha_m_ignore_causal(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    q = ac.split_heads(_proj(query, w_q, b_q), n_heads)
    k = ac.split_heads(_proj(key, w_k, b_k), n_heads)
    v = ac.split_heads(_proj(value, w_v, b_v), n_heads)
    out, w = ac.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    return _proj(ac.merge_heads(out), w_o, b_o), w


def mha_m_ignore_mask(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    q = ac.split_heads(_proj(query, w_q, b_q), n_heads)
    k = ac.split_heads(_proj(key, w_k, b_k), n_heads)
    v = ac.split_heads(_proj(value, w_v, b_v), n_heads)
    out, w = ac.scaled_dot_product_attention(q, k, v, None, causal=causal, return_weights=True)
    return _proj(ac.merge_heads(out), w_o, b_o), w


def mha_m_self_only(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    q = ac.split_heads(_proj(query, w_q, b_q), n_heads)
    k = ac.split_heads(_proj(query, w_k, b_k), n_heads)
    v = ac.split_heads(_proj(query, w_v, b_v), n_heads)
    out, w = ac.scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)
    return _proj(ac.merge_heads(out), w_o, b_o), w


def mha_m_kv_swapped(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    q = ac.split_heads(_proj(query, w_q, b_q), n_heads)
    k = ac.split_heads(_proj(value, w_k, b_k), n_heads)
    v = ac.split_heads(_proj(key, w_v, b_v), n_heads)
    out, w = ac.scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)
    return _proj(ac.merge_heads(out), w_o, b_o), w


def mha_m_avg_weights(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    q = ac.split_heads(_proj(query, w_q, b_q), n_heads)
    k = ac.split_heads(_proj(key, w_k, b_k), n_heads)
    v = ac.split_heads(_proj(value, w_v, b_v), n_heads)
    out, w = ac.scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)
    return _proj(ac.merge_heads(out), w_o, b_o), w.mean(1)


def mha_m_torch_convention(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    q = ac.split_heads(F.linear(query, w_q, b_q), n_heads)
    k = ac.split_heads(F.linear(key, w_k, b_k), n_heads)
    v = ac.split_heads(F.linear(value, w_v, b_v), n_heads)
    out, w = ac.scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)
    return F.linear(ac.merge_heads(out), w_o, b_o), w


def mha_m_causal_replaces_mask(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    q = ac.split_heads(_proj(query, w_q, b_q), n_heads)
    k = ac.split_heads(_proj(key, w_k, b_k), n_heads)
    v = ac.split_heads(_proj(value, w_v, b_v), n_heads)
    if causal:
        mask = ac.causal_mask(q.shape[-2], k.shape[-2])
    out, w = ac.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    return _proj(ac.merge_heads(out), w_o, b_o), w


def mha_m_bottom_right(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    q = ac.split_heads(_proj(query, w_q, b_q), n_heads)
    k = ac.split_heads(_proj(key, w_k, b_k), n_heads)
    v = ac.split_heads(_proj(value, w_v, b_v), n_heads)
    L, S = q.shape[-2], k.shape[-2]
    if causal:
        c = torch.ones(L, S, dtype=torch.bool).tril(S - L)
        mask = c if mask is None else mask & c
    out, w = ac.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    return _proj(ac.merge_heads(out), w_o, b_o), w


def mha_m_own_split_mixing(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    def split(x):
        b, l, d = x.shape
        return x.reshape(b, n_heads, l, d // n_heads)

    q, k, v = split(_proj(query, w_q, b_q)), split(_proj(key, w_k, b_k)), split(_proj(value, w_v, b_v))
    out, w = ac.scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)
    return _proj(ac.merge_heads(out), w_o, b_o), w


def mha_m_nan_masked_rows(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    q = ac.split_heads(_proj(query, w_q, b_q), n_heads)
    k = ac.split_heads(_proj(key, w_k, b_k), n_heads)
    v = ac.split_heads(_proj(value, w_v, b_v), n_heads)
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        s = s.masked_fill(~ac.causal_mask(s.shape[-2], s.shape[-1]), float("-inf"))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.softmax(s, -1)
    return _proj(ac.merge_heads(w @ v), w_o, b_o), w


MHA_MISTAKES = [
    mha_m_no_wo,
    mha_m_scale_dmodel,
    mha_m_ignore_biases,
    mha_m_bo_before_wo,
    mha_m_ignore_causal,
    mha_m_ignore_mask,
    mha_m_self_only,
    mha_m_kv_swapped,
    mha_m_avg_weights,
    mha_m_torch_convention,
    mha_m_causal_replaces_mask,
    mha_m_bottom_right,
    mha_m_own_split_mixing,
    mha_m_nan_masked_rows,
]


def mha_v_own_attention(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    def proj(x, w, b):
        return F.linear(x, w.T, b)

    def split(x):
        b, l, d = x.shape
        return x.view(b, l, n_heads, d // n_heads).transpose(1, 2)

    q, k, v = split(proj(query, w_q, b_q)), split(proj(key, w_k, b_k)), split(proj(value, w_v, b_v))
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    allowed = torch.ones(s.shape[-2:], dtype=torch.bool)
    if causal:
        allowed = allowed.tril()
    if mask is not None:
        allowed = allowed & mask
    s = s.masked_fill(~allowed, float("-inf"))
    w = torch.softmax(s, -1).nan_to_num(0.0)
    out = (w @ v).transpose(1, 2).reshape(query.shape[0], query.shape[1], -1)
    return proj(out, w_o, b_o), w


def mha_v_einsum(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    d_model = w_q.shape[0]
    dh = d_model // n_heads
    q = torch.einsum("bld,de->ble", query, w_q)
    k = torch.einsum("bsd,de->bse", key, w_k)
    v = torch.einsum("bsd,de->bse", value, w_v)
    if b_q is not None:
        q = q + b_q
    if b_k is not None:
        k = k + b_k
    if b_v is not None:
        v = v + b_v
    q = q.unflatten(-1, (n_heads, dh))
    k = k.unflatten(-1, (n_heads, dh))
    v = v.unflatten(-1, (n_heads, dh))
    s = torch.einsum("blhd,bshd->bhls", q, k) * dh**-0.5
    if causal:
        s = s.masked_fill(~ac.causal_mask(s.shape[-2], s.shape[-1]), float("-inf"))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = ac.softmax(s, dim=-1)
    out = torch.einsum("bhls,bshd->blhd", w, v).flatten(2)
    out = out @ w_o
    if b_o is not None:
        out = out + b_o
    return out, w


def mha_v_combined_mask(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    q = ac.split_heads(_proj(query, w_q, b_q), n_heads)
    k = ac.split_heads(_proj(key, w_k, b_k), n_heads)
    v = ac.split_heads(_proj(value, w_v, b_v), n_heads)
    if causal:
        c = ac.causal_mask(q.shape[-2], k.shape[-2])
        mask = c if mask is None else ac.combine_masks(mask, c)
    out, w = ac.masked_attention(q, k, v, mask)
    return _proj(ac.merge_heads(out), w_o, b_o), w


def mha_v_addmm(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    def proj(x, w, b):
        flat = x.reshape(-1, x.shape[-1])
        y = torch.addmm(b, flat, w) if b is not None else flat @ w
        return y.reshape(*x.shape[:-1], -1)

    q = ac.split_heads(proj(query, w_q, b_q), n_heads)
    k = ac.split_heads(proj(key, w_k, b_k), n_heads)
    v = ac.split_heads(proj(value, w_v, b_v), n_heads)
    out, w = ac.scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)
    return proj(ac.merge_heads(out), w_o, b_o), w


def mha_v_per_head_loop(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    d_model = w_q.shape[0]
    dh = d_model // n_heads
    q = _proj(query, w_q, b_q)
    k = _proj(key, w_k, b_k)
    v = _proj(value, w_v, b_v)
    outs, weights = [], []
    for h in range(n_heads):
        sl = slice(h * dh, (h + 1) * dh)
        hm = None if mask is None else mask.expand(query.shape[0], n_heads, query.shape[1], key.shape[1])[:, h]
        o, w = ac.scaled_dot_product_attention(
            q[..., sl], k[..., sl], v[..., sl], hm, causal=causal, return_weights=True
        )
        outs.append(o)
        weights.append(w)
    return _proj(torch.cat(outs, -1), w_o, b_o), torch.stack(weights, 1)


MHA_VARIANTS = [mha_v_own_attention, mha_v_einsum, mha_v_combined_mask, mha_v_addmm, mha_v_per_head_loop]


# ---------------------------------------------------------------- second round: aimed at the holes found


# ---- scaled_attention_scores
def ss_m_not_scale(q, k, scale=None):
    if not scale:
        scale = 1 / math.sqrt(q.shape[-1])
    return q @ k.mT * scale


# ---- softmax
def sm_v_inplace_div(x, dim=-1, temperature=1.0):
    z = x / temperature
    z = z - z.amax(dim=dim, keepdim=True)
    e = torch.exp(z)
    e /= e.sum(dim=dim, keepdim=True)
    return e


def sm_m_temp_twice(x, dim=-1, temperature=1.0):
    z = x / temperature
    e = torch.exp((z - z.amax(dim=dim, keepdim=True)) / temperature)
    return e / e.sum(dim=dim, keepdim=True)


def sm_m_where_finite(x, dim=-1, temperature=1.0):
    z = x / temperature
    z = torch.where(torch.isfinite(z), z, torch.zeros_like(z))  # "guard against inf"
    e = torch.exp(z - z.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def sm_m_max_before_temp(x, dim=-1, temperature=1.0):
    z = x - x.amax(dim=dim, keepdim=True).abs()  # abs "to be safe"
    e = torch.exp(z / temperature)
    return e / e.sum(dim=dim, keepdim=True)


# ---- masked_attention
def ma_v_index_put_nan(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.softmax(s, dim=-1)
    w[torch.isnan(w)] = 0.0
    return w @ v, w


def ma_v_big_negative_zero_rows(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is None:
        w = torch.softmax(s, -1)
        return w @ v, w
    s = s.masked_fill(~mask, -1e9)
    w = torch.softmax(s, -1) * mask.any(dim=-1, keepdim=True)
    return w @ v, w


def ma_v_finfo(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(q.shape[-1]))
    if mask is not None:
        s = s.masked_fill(~mask, torch.finfo(s.dtype).min)
        w = torch.softmax(s, -1).masked_fill(~mask, 0.0)
        w = w.masked_fill(~mask.any(-1, keepdim=True), 0.0)
    else:
        w = torch.softmax(s, -1)
    return w @ v, w


def ma_v_f_sdpa(q, k, v, mask=None):
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.softmax(s, -1).nan_to_num(0.0)
    return out.nan_to_num(0.0), w


def ma_v_exercise04_softmax(q, k, v, mask=None):
    def softmax(x, dim=-1):
        z = x - x.amax(dim=dim, keepdim=True)
        e = torch.exp(z)
        return e / e.sum(dim=dim, keepdim=True)

    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.nan_to_num(softmax(s), nan=0.0)
    return w @ v, w


def ma_m_nan_to_num_scores(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = torch.nan_to_num(s.masked_fill(~mask, float("-inf")))
    w = torch.softmax(s, -1)
    return w @ v, w


# ---- multi_head_attention
def mha_m_square_causal(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    def p(x, w, b):
        return x @ w if b is None else x @ w + b

    q = ac.split_heads(p(query, w_q, b_q), n_heads)
    k = ac.split_heads(p(key, w_k, b_k), n_heads)
    v = ac.split_heads(p(value, w_v, b_v), n_heads)
    if causal:
        c = ac.causal_mask(q.shape[-2])
        mask = c if mask is None else mask & c
    out, w = ac.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    return p(ac.merge_heads(out), w_o, b_o), w


def mha_v_causal_from_square_keys(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    def p(x, w, b):
        return x @ w if b is None else x @ w + b

    q = ac.split_heads(p(query, w_q, b_q), n_heads)
    k = ac.split_heads(p(key, w_k, b_k), n_heads)
    v = ac.split_heads(p(value, w_v, b_v), n_heads)
    L, S = q.shape[-2], k.shape[-2]
    if causal:
        n = max(L, S)
        c = torch.ones(n, n, dtype=torch.bool).tril()[:L, :S]
        mask = c if mask is None else mask & c
    out, w = ac.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    return p(ac.merge_heads(out), w_o, b_o), w


# ---------------------------------------------------------------- third round


def sc_m_squeeze(q, k):
    return (q @ k.transpose(-2, -1)).squeeze()


def sm_v_detached_max(x, dim=-1, temperature=1.0):
    z = x / temperature
    z = z - z.amax(dim=dim, keepdim=True).detach()
    e = z.exp()
    return e / e.sum(dim=dim, keepdim=True)


def ma_v_additive(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s + torch.zeros(mask.shape, dtype=s.dtype).masked_fill(~mask, float("-inf"))
    w = torch.softmax(s, -1).nan_to_num(0.0)
    return w @ v, w


def ma_m_out_zero_weights_uniform(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, -1e9)
    w = torch.softmax(s, -1)
    out = w @ v
    if mask is not None:
        out = out * mask.any(-1, keepdim=True)
    return out, w


def mha_m_or_masks(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    def p(x, w, b):
        return x @ w if b is None else x @ w + b

    q = ac.split_heads(p(query, w_q, b_q), n_heads)
    k = ac.split_heads(p(key, w_k, b_k), n_heads)
    v = ac.split_heads(p(value, w_v, b_v), n_heads)
    if causal:
        c = ac.causal_mask(q.shape[-2], k.shape[-2])
        mask = c if mask is None else (mask | c)
    out, w = ac.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    return p(ac.merge_heads(out), w_o, b_o), w


def mha_m_head_mask_unsqueeze(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    def p(x, w, b):
        return x @ w if b is None else x @ w + b

    q = ac.split_heads(p(query, w_q, b_q), n_heads)
    k = ac.split_heads(p(key, w_k, b_k), n_heads)
    v = ac.split_heads(p(value, w_v, b_v), n_heads)
    if mask is not None:
        mask = mask.unsqueeze(1)
    out, w = ac.scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)
    return p(ac.merge_heads(out), w_o, b_o), w


def mha_m_no_b_k(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    # drops b_k: it adds q_i . b_k to every score of row i, which the softmax does not see, so only the
    # gradient (none reaches b_k) tells it apart
    def p(x, w, b):
        return x @ w if b is None else x @ w + b

    q = ac.split_heads(p(query, w_q, b_q), n_heads)
    k = ac.split_heads(key @ w_k, n_heads)
    v = ac.split_heads(p(value, w_v, b_v), n_heads)
    out, w = ac.scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)
    return p(ac.merge_heads(out), w_o, b_o), w


def qkv_m_input_centred_in_place(x, w_q, w_k, w_v):
    # normalises x in place first ("layer norm"), a step the exercise does not ask for
    x.sub_(x.mean(-1, keepdim=True))
    return x @ w_q, x @ w_k, x @ w_v


def mh_v_view_after_contiguous(x):
    return x.permute(0, 2, 1, 3).contiguous().view(x.shape[0], x.shape[2], -1)


def ss_v_tensor_scale(q, k, scale=None):
    s = torch.tensor(1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    return (q @ k.transpose(-2, -1)) * s  # 0-dim float32: keeps float64 (0-dim doesn't promote)


# ---------------------------------------------------------------- fourth round: orders of operations (tolerances)


def ma_v_prescale_q(q, k, v, mask=None):
    s = (q / math.sqrt(q.shape[-1])) @ k.transpose(-2, -1)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.softmax(s, -1).nan_to_num(0.0)
    return w @ v, w


def ma_v_sqrt_split(q, k, v, mask=None):
    r = q.shape[-1] ** -0.25
    s = (q * r) @ (k * r).transpose(-2, -1)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.softmax(s, -1).nan_to_num(0.0)
    return w @ v, w


def ma_v_einsum_out(q, k, v, mask=None):
    s = torch.einsum("...ld,...sd->...ls", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.softmax(s, -1).nan_to_num(0.0)
    return torch.einsum("...ls,...sd->...ld", w, v), w


def ma_v_log_softmax(q, k, v, mask=None):
    s = q @ k.mT / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.log_softmax(s, -1).exp().nan_to_num(0.0)
    return w @ v, w


def sm_v_half_native_lse(x, dim=-1, temperature=1.0):
    z = x / temperature
    return torch.exp(z - torch.logsumexp(z, dim=dim, keepdim=True))


def mha_v_prescale(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    d_head = w_q.shape[1] // n_heads
    q = F.linear(query, w_q.T, b_q) / math.sqrt(d_head)
    k = F.linear(key, w_k.T, b_k)
    v = F.linear(value, w_v.T, b_v)
    q, k, v = (t.unflatten(-1, (n_heads, d_head)).transpose(1, 2) for t in (q, k, v))
    out, w = ac.scaled_dot_product_attention(q, k, v, mask, causal=causal, scale=1.0, return_weights=True)
    return F.linear(out.transpose(1, 2).flatten(2), w_o.T, b_o), w


def mha_v_float64(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    dt = query.dtype

    def d(t):
        return None if t is None else t.double()

    def p(x, w, b):
        return x @ w if b is None else x @ w + b

    q = ac.split_heads(p(d(query), d(w_q), d(b_q)), n_heads)
    k = ac.split_heads(p(d(key), d(w_k), d(b_k)), n_heads)
    v = ac.split_heads(p(d(value), d(w_v), d(b_v)), n_heads)
    out, w = ac.scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)
    return p(ac.merge_heads(out), d(w_o), d(b_o)).to(dt), w.to(dt)


def mha_v_sdpa_torch(
    query, key, value, w_q, w_k, w_v, w_o, n_heads, *, b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False
):
    def p(x, w, b):
        return x @ w if b is None else x @ w + b

    q = ac.split_heads(p(query, w_q, b_q), n_heads)
    k = ac.split_heads(p(key, w_k, b_k), n_heads)
    v = ac.split_heads(p(value, w_v, b_v), n_heads)
    allowed = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool)
    if causal:
        allowed = allowed.tril()
    if mask is not None:
        allowed = allowed & mask
    s = (q @ k.mT) / math.sqrt(q.shape[-1])
    w = s.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed).nan_to_num(0.0)
    return p(ac.merge_heads(out), w_o, b_o), w


def ma_m_own_softmax_in_place(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    e = torch.exp(s - s.amax(dim=-1, keepdim=True))
    e /= e.sum(dim=-1, keepdim=True)
    w = torch.nan_to_num(e, nan=0.0)
    return w @ v, w


def sm_v_nan_to_num_first(x, dim=-1, temperature=1.0):
    # "defensive": -inf becomes the most negative float, whose exponential is still 0
    z = torch.nan_to_num(x) / temperature
    e = torch.exp(z - z.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def sm_v_clamped(x, dim=-1, temperature=1.0):
    z = x.clamp(min=-1e4) / temperature
    e = torch.exp(z - z.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


# in place, autograd (see the module docstring)
SOFTMAX_MISTAKES += [
    sm_m_exp_in_place_transposed,
    sm_v_inplace_div,
    sm_m_temp_twice,
    sm_m_where_finite,
    sm_m_max_before_temp,
]
MASKED_MISTAKES += [ma_m_nan_to_num_in_place, ma_v_index_put_nan, ma_m_nan_to_num_scores, ma_m_own_softmax_in_place]
MASKED_VARIANTS += [ma_v_big_negative_zero_rows, ma_v_finfo, ma_v_f_sdpa, ma_v_exercise04_softmax]
SCALED_MISTAKES += [ss_m_not_scale]
MHA_MISTAKES += [mha_m_square_causal]
MHA_VARIANTS += [mha_v_causal_from_square_keys]
SCORES_MISTAKES += [sc_m_squeeze]
SOFTMAX_VARIANTS += [sm_v_detached_max]
MASKED_MISTAKES += [ma_m_out_zero_weights_uniform, *MASKED_MISTAKES_LATE]
MASKED_VARIANTS += [ma_v_additive]
MHA_MISTAKES += [mha_m_or_masks, mha_m_head_mask_unsqueeze, mha_m_no_b_k]
QKV_MISTAKES += [qkv_m_input_centred_in_place]
MERGE_VARIANTS += [mh_v_view_after_contiguous]
SCALED_VARIANTS += [ss_v_tensor_scale]
MASKED_VARIANTS += [ma_v_prescale_q, ma_v_sqrt_split, ma_v_einsum_out, ma_v_log_softmax]
SOFTMAX_VARIANTS += [sm_v_half_native_lse, sm_v_nan_to_num_first, sm_v_clamped]
MHA_VARIANTS += [mha_v_prescale, mha_v_float64, mha_v_sdpa_torch]

CATALOGUE = {
    "qkv_projection": (QKV_MISTAKES, QKV_VARIANTS),
    "attention_scores": (SCORES_MISTAKES, SCORES_VARIANTS),
    "scaled_attention_scores": (SCALED_MISTAKES, SCALED_VARIANTS),
    "softmax": (SOFTMAX_MISTAKES, SOFTMAX_VARIANTS),
    "causal_mask": (CAUSAL_MISTAKES, CAUSAL_VARIANTS),
    "padding_mask": (PADDING_MISTAKES, PADDING_VARIANTS),
    "masked_attention": (MASKED_MISTAKES, MASKED_VARIANTS),
    "split_heads": (SPLIT_MISTAKES, SPLIT_VARIANTS),
    "merge_heads": (MERGE_MISTAKES, MERGE_VARIANTS),
    "multi_head_attention": (MHA_MISTAKES, MHA_VARIANTS),
}
MISTAKES = [(name, fn) for name, (mistakes, _) in CATALOGUE.items() for fn in mistakes]
VARIANTS = [(name, fn) for name, (_, variants) in CATALOGUE.items() for fn in variants]


def test_enough_learners_per_exercise() -> None:
    for name, (mistakes, variants) in CATALOGUE.items():
        assert len(mistakes) >= 8 and len(variants) >= 4, name
        assert len({fn.__name__ for fn in mistakes + variants}) == len(mistakes) + len(variants), name


@pytest.mark.parametrize(("name", "fn"), MISTAKES, ids=[f"{n}-{f.__name__}" for n, f in MISTAKES])
def test_mistake_fails(name: str, fn) -> None:
    result = run_check(get_exercise(name), fn)
    assert not result.passed, f"{fn.__name__} passed: {result.message}"
    assert "please report this" not in result.message  # the check itself did not break


@pytest.mark.parametrize(("name", "fn"), VARIANTS, ids=[f"{n}-{f.__name__}" for n, f in VARIANTS])
def test_variant_passes(name: str, fn) -> None:
    result = run_check(get_exercise(name), fn)
    assert result.passed, f"{fn.__name__}: {result.message}"


@pytest.mark.parametrize(
    ("name", "fn", "hint"),
    [
        ("scaled_attention_scores", ss_m_falsy_scale, "if scale is None"),
        ("scaled_attention_scores", ss_m_not_scale, "if scale is None"),
        ("scaled_attention_scores", ss_m_both, "not by both"),
        ("softmax", sm_m_untempered_max, "max(x / temperature)"),
        ("softmax", sm_v_inplace_div, "in place"),
        ("softmax", sm_m_exp_in_place_transposed, "in place"),
        ("masked_attention", ma_v_index_put_nan, "in place"),
        ("masked_attention", ma_m_nan_to_num_in_place, "in place"),
        ("masked_attention", ma_m_own_softmax_in_place, "dividing the exponentials in place"),
        ("multi_head_attention", mha_m_bottom_right, "top-left"),
        ("multi_head_attention", mha_m_square_causal, "causal_mask(L, S)"),
        ("multi_head_attention", mha_m_bo_before_wo, "after the output projection"),
        ("multi_head_attention", mha_m_no_b_k, "add b_k"),
        ("multi_head_attention", mha_m_torch_convention, "stored as in the equations"),
        ("scaled_attention_scores", ss_m_precedence, "binds tighter"),
        ("padding_mask", pm_m_left_padding, "left padding"),
        ("qkv_projection", qkv_m_unpack_3d, "assumes exactly three"),
        ("qkv_projection", qkv_m_scaled_q, "not to q"),
        ("attention_scores", sc_m_bmm, "transpose(-2, -1)"),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
def test_audit_holes_get_their_hint(name: str, fn, hint: str) -> None:
    """The holes this audit found: each now fails with a hint that names the bug."""
    result = run_check(get_exercise(name), fn)
    assert not result.passed
    assert hint in result.message, result.message
