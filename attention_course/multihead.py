r"""Multi-head attention (lesson 06).

$$\mathrm{MHA}(X_q, X_{kv}) = \mathrm{Concat}(\mathrm{head}_1, \dots, \mathrm{head}_h)\, W_O,\qquad
\mathrm{head}_i = \mathrm{Attention}(X_q W_Q^{(i)}, X_{kv} W_K^{(i)}, X_{kv} W_V^{(i)})$$

All heads are computed at once: project with one wide ``(d_model, d_model)`` matrix, then split
the last axis into ``n_heads`` slices of width ``d_head = d_model / n_heads`` (a reshape **and**
a transpose, so that heads become a batch axis), attend, and merge the heads back.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._validation import require_float, require_rank, shape_of
from .attention import scaled_dot_product_attention
from .masking import key_mask_to_attention_mask


def _check_heads(name: str, width: int, n_heads: int) -> None:
    if n_heads <= 0 or width % n_heads != 0:
        raise ValueError(f"n_heads={n_heads} must be positive and divide {name}={width}")


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """``(B, L, d_model) -> (B, n_heads, L, d_head)``: reshape the last axis, then move heads forward.

    Args:
        x: ``(B, L, d_model)``.
        n_heads: number of heads; must divide ``d_model``.

    Returns:
        ``(B, n_heads, L, d_model // n_heads)``; head ``h`` holds columns ``h*d_head:(h+1)*d_head``.
    """
    require_float("x", x)
    require_rank("x", x, 3, "(B, L, d_model)")
    batch, length, d_model = x.shape
    _check_heads("d_model", d_model, n_heads)
    return x.reshape(batch, length, n_heads, d_model // n_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """``(B, n_heads, L, d_head) -> (B, L, n_heads * d_head)``, the inverse of ``split_heads``.

    Args:
        x: ``(B, n_heads, L, d_head)``.

    Returns:
        ``(B, L, n_heads * d_head)`` with head ``h`` in columns ``h*d_head:(h+1)*d_head``.
    """
    require_float("x", x)
    require_rank("x", x, 4, "(B, n_heads, L, d_head)")
    batch, n_heads, length, d_head = x.shape
    return x.transpose(1, 2).reshape(batch, length, n_heads * d_head)


def multi_head_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    w_q: Tensor,
    w_k: Tensor,
    w_v: Tensor,
    w_o: Tensor,
    n_heads: int,
    *,
    b_q: Tensor | None = None,
    b_k: Tensor | None = None,
    b_v: Tensor | None = None,
    b_o: Tensor | None = None,
    mask: Tensor | None = None,
    causal: bool = False,
) -> tuple[Tensor, Tensor]:
    """Multi-head attention as a function of its weights (equations' layout: ``y = x @ w + b``).

    Args:
        query: ``(B, L, d_model)``, the sequence that asks.
        key: ``(B, S, d_model)``, the sequence that is looked up (``key is query`` for self-attention).
        value: ``(B, S, d_model)``.
        w_q, w_k, w_v, w_o: ``(d_model, d_model)`` each.
        n_heads: number of heads; divides ``d_model``.
        b_q, b_k, b_v, b_o: optional biases ``(d_model,)``.
        mask: bool broadcastable to ``(B, n_heads, L, S)``, ``True`` = may attend.
        causal: hide keys ``j > i``.

    Returns:
        ``output (B, L, d_model)`` and per-head ``weights (B, n_heads, L, S)``.
    """
    require_rank("query", require_float("query", query), 3, "(B, L, d_model)")
    require_rank("key", require_float("key", key), 3, "(B, S, d_model)")
    require_rank("value", require_float("value", value), 3, "(B, S, d_model)")
    d_model = query.shape[-1]
    _check_heads("d_model", d_model, n_heads)
    for name, w in (("w_q", w_q), ("w_k", w_k), ("w_v", w_v), ("w_o", w_o)):
        if tuple(w.shape) != (d_model, d_model):
            raise ValueError(f"{name} must be (d_model, d_model) = {(d_model, d_model)}, got {shape_of(w)}")

    def project(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        return x @ w if b is None else x @ w + b

    q = split_heads(project(query, w_q, b_q), n_heads)  # (B, H, L, d_head)
    k = split_heads(project(key, w_k, b_k), n_heads)  # (B, H, S, d_head)
    v = split_heads(project(value, w_v, b_v), n_heads)  # (B, H, S, d_head)
    heads, weights = scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)
    output = project(merge_heads(heads), w_o, b_o)  # (B, L, d_model)
    return output, weights


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with ``n_heads`` heads; weights stored like ``nn.Linear`` (out, in).

    ``forward(query, key=None, value=None, key_mask=None, attn_mask=None, causal=False)``:
    ``key``/``value`` default to ``query`` (self-attention). ``key_mask (B, S)`` is ``True`` at
    real tokens. Returns ``(output (B, L, d_model), weights (B, n_heads, L, S))``.
    """

    def __init__(self, d_model: int, n_heads: int, *, bias: bool = True) -> None:
        super().__init__()
        _check_heads("d_model", d_model, n_heads)
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        *,
        key_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        causal: bool = False,
    ) -> tuple[Tensor, Tensor]:
        key = query if key is None else key
        value = key if value is None else value
        mask = attn_mask
        if key_mask is not None:
            per_key = key_mask_to_attention_mask(key_mask)[:, None]  # (B, 1, 1, S): same for every head and query
            mask = per_key if mask is None else mask & per_key
        return multi_head_attention(
            query,
            key,
            value,
            self.q_proj.weight.T,
            self.k_proj.weight.T,
            self.v_proj.weight.T,
            self.out_proj.weight.T,
            self.n_heads,
            b_q=self.q_proj.bias,
            b_k=self.k_proj.bias,
            b_v=self.v_proj.bias,
            b_o=self.out_proj.bias,
            mask=mask,
            causal=causal,
        )

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy the weights of a ``torch.nn.MultiheadAttention`` (same embed dims, no bias_kv)."""
        if not mha._qkv_same_embed_dim or mha.bias_k is not None:
            raise ValueError(
                "from_torch supports nn.MultiheadAttention with kdim = vdim = embed_dim and no add_bias_kv"
            )
        has_bias = mha.in_proj_bias is not None
        module = cls(mha.embed_dim, mha.num_heads, bias=has_bias)
        d = mha.embed_dim
        with torch.no_grad():
            for i, proj in enumerate((module.q_proj, module.k_proj, module.v_proj)):
                proj.weight.copy_(mha.in_proj_weight[i * d : (i + 1) * d])
                if has_bias:
                    proj.bias.copy_(mha.in_proj_bias[i * d : (i + 1) * d])
            module.out_proj.weight.copy_(mha.out_proj.weight)
            if has_bias:
                module.out_proj.bias.copy_(mha.out_proj.bias)
        return module.to(mha.in_proj_weight.dtype)
