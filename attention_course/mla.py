r"""Multi-head latent attention (MLA, DeepSeek-V2/V3): cache one small latent per token (lesson 13).

A KV cache stores, per token and layer, ``2 * n_kv_heads * d_head`` numbers. MLA stores instead
a **latent** $c_t = x_t W_{\text{down}}$ of width $d_c$ (shared by all heads) plus one small
rotated key $k^{R}_t$ of width $d_R$ (shared by all heads too), and rebuilds each head's key and
value from the latent when it attends:

$$k^{C}_{t,h} = c_t W^{UK}_h, \qquad v_{t,h} = c_t W^{UV}_h, \qquad
  s_{t,h} = \frac{q^{C}_{h} \cdot k^{C}_{t,h} + q^{R}_h \cdot k^{R}_t}{\sqrt{d_C + d_R}}.$$

The **absorbed** form never rebuilds them: $q^C_h \cdot (c_t W^{UK}_h) = (q^C_h W^{UK\top}_h) \cdot c_t$
moves $W^{UK}_h$ onto the query, and $\sum_t a_{t,h}\,(c_t W^{UV}_h) W^O_h =
(\sum_t a_{t,h}\,c_t)\,(W^{UV}_h W^O_h)$ moves $W^{UV}_h$ onto the output. Every head then attends
directly over the cached latents. RoPE cannot be folded this way (a rotation that depends on the
position sits between $q$ and $W^{UK}$), which is why the rotated part is a separate, decoupled
key $k^R$ that is cached as it is.

Layouts: tokens ``(B, T, d_model)``; latents ``(B, S, d_latent)``; rotated keys ``(B, S, d_rope)``;
per-head queries ``(B, n_heads, T, d)``; per-head weights ``(n_heads, in, out)`` so that
``x @ w[h]`` is head ``h``'s map (equation layout, as everywhere in the course).
(DeepSeek also compresses the queries through a latent; that saves activations, not cache, and
is left out here.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ._validation import require_count, require_float, require_rank, shape_of
from .masking import causal_mask
from .positional import apply_rope
from .softmax import softmax


def _check_step(
    q_nope: Tensor, q_rope: Tensor, latents: Tensor, k_rope: Tensor, w_uk: Tensor, w_uv: Tensor, w_o: Tensor
) -> None:
    for name, t, rank, layout in (
        ("q_nope", q_nope, 4, "(B, n_heads, T, d_nope)"),
        ("q_rope", q_rope, 4, "(B, n_heads, T, d_rope)"),
        ("latents", latents, 3, "(B, S, d_latent)"),
        ("k_rope", k_rope, 3, "(B, S, d_rope)"),
        ("w_uk", w_uk, 3, "(n_heads, d_latent, d_nope)"),
        ("w_uv", w_uv, 3, "(n_heads, d_latent, d_v)"),
        ("w_o", w_o, 3, "(n_heads, d_v, d_model)"),
    ):
        require_rank(name, require_float(name, t), rank, layout)
    batch, n_heads, n_new, d_nope = q_nope.shape
    d_latent = latents.shape[-1]
    problems = []
    if q_rope.shape[:3] != q_nope.shape[:3]:
        problems.append("q_rope must share q_nope's (B, n_heads, T)")
    if latents.shape[0] != batch or k_rope.shape[:2] != latents.shape[:2] or k_rope.shape[-1] != q_rope.shape[-1]:
        problems.append("latents and k_rope must be (B, S, ·) with q's B and k_rope's width equal to q_rope's")
    if latents.shape[1] < n_new:
        problems.append("the cache must hold at least the T new tokens (they are its last T rows)")
    if (
        w_uk.shape != (n_heads, d_latent, d_nope)
        or w_uv.shape[:2] != (n_heads, d_latent)
        or w_o.shape[:2] != (n_heads, w_uv.shape[2])
    ):
        problems.append(
            "w_uk must be (n_heads, d_latent, d_nope), w_uv (n_heads, d_latent, d_v), w_o (n_heads, d_v, d_model)"
        )
    if problems:
        shapes = ", ".join(
            f"{n} {shape_of(t)}"
            for n, t in (
                ("q_nope", q_nope),
                ("q_rope", q_rope),
                ("latents", latents),
                ("k_rope", k_rope),
                ("w_uk", w_uk),
                ("w_uv", w_uv),
                ("w_o", w_o),
            )
        )
        raise ValueError(f"{'; '.join(problems)}; got {shapes}")


def _new_query_mask(n_new: int, n_keys: int, device: torch.device) -> Tensor | None:
    """Bottom-right causal rows: new query i sits at position n_keys - n_new + i (None for one query)."""
    return None if n_new == 1 else causal_mask(n_keys, device=device)[n_keys - n_new :]


def mla_naive_step(
    q_nope: Tensor, q_rope: Tensor, latents: Tensor, k_rope: Tensor, w_uk: Tensor, w_uv: Tensor, w_o: Tensor
) -> Tensor:
    r"""MLA attention for ``T`` new tokens, up-projecting the cached latents to per-head keys and values.

    The new tokens are the **last** ``T`` of the ``S`` cached ones (their latents and rotated keys
    were appended first); new query ``i`` sits at position ``S - T + i`` and sees keys up to there.

    Args:
        q_nope: ``(B, n_heads, T, d_nope)`` the part of the queries without position.
        q_rope: ``(B, n_heads, T, d_rope)`` the decoupled part, **before** RoPE (rotated here at
            positions ``S - T .. S - 1``).
        latents: ``(B, S, d_latent)`` cached $c_t = x_t W_\text{down}$.
        k_rope: ``(B, S, d_rope)`` cached keys' decoupled part, already rotated at their positions.
        w_uk: ``(n_heads, d_latent, d_nope)``; w_uv: ``(n_heads, d_latent, d_v)``;
        w_o: ``(n_heads, d_v, d_model)`` each head's slice of the output projection.

    Returns:
        ``(B, T, d_model)``: the attention output after the output projection.
    """
    _check_step(q_nope, q_rope, latents, k_rope, w_uk, w_uv, w_o)
    n_new, n_keys = q_nope.shape[-2], latents.shape[-2]
    q_rope = apply_rope(q_rope, torch.arange(n_keys - n_new, n_keys, device=q_rope.device))
    keys_nope = latents[:, None] @ w_uk  # (B, H, S, d_nope): every head's keys, materialised
    values = latents[:, None] @ w_uv  # (B, H, S, d_v)
    scores = q_nope @ keys_nope.transpose(-2, -1) + q_rope @ k_rope[:, None].transpose(-2, -1)  # (B, H, T, S)
    scores = scores / math.sqrt(q_nope.shape[-1] + q_rope.shape[-1])
    mask = _new_query_mask(n_new, n_keys, scores.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    heads = softmax(scores, dim=-1) @ values  # (B, H, T, d_v)
    return torch.einsum("bhtv,hvd->btd", heads, w_o)  # concat heads @ W_O, one slice per head


def mla_absorbed_step(
    q_nope: Tensor, q_rope: Tensor, latents: Tensor, k_rope: Tensor, w_uk: Tensor, w_uv: Tensor, w_o: Tensor
) -> Tensor:
    r"""The same attention as :func:`mla_naive_step`, with $W^{UK}$ folded into the queries and
    $W^{UV}$ into the output: every head attends over the latents themselves (the lesson 13 exercise).

    $$s = \frac{(q^C W^{UK\top}) \cdot c + \mathrm{RoPE}(q^R) \cdot k^R}{\sqrt{d_\text{nope} + d_\text{rope}}},
      \qquad o = \mathrm{softmax}(s)\, C \; W^{UV} W^O.$$

    The scale is the width of the key each score compares with, ``d_nope + d_rope``, not the
    latent width: folding moves weights, it does not change the scores.

    Args and returns: as :func:`mla_naive_step`.
    """
    _check_step(q_nope, q_rope, latents, k_rope, w_uk, w_uv, w_o)
    n_new, n_keys = q_nope.shape[-2], latents.shape[-2]
    q_rope = apply_rope(q_rope, torch.arange(n_keys - n_new, n_keys, device=q_rope.device))
    q_latent = q_nope @ w_uk.transpose(-2, -1)  # (B, H, T, d_latent): W_UK absorbed into the query
    scores = q_latent @ latents[:, None].transpose(-2, -1) + q_rope @ k_rope[:, None].transpose(-2, -1)  # (B, H, T, S)
    scores = scores / math.sqrt(q_nope.shape[-1] + q_rope.shape[-1])
    mask = _new_query_mask(n_new, n_keys, scores.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    context = softmax(scores, dim=-1) @ latents[:, None]  # (B, H, T, d_latent): a mix of latents per head
    w_uv_o = w_uv @ w_o  # (H, d_latent, d_model): W_UV absorbed into the output projection
    return torch.einsum("bhtc,hcd->btd", context, w_uv_o)


@dataclass
class MLAWeights:
    """The weights of one MLA layer, in equation layout.

    Attributes:
        w_down: ``(d_model, d_latent)`` tokens to latents, $c = x W_\\text{down}$.
        w_uk: ``(n_heads, d_latent, d_nope)``; w_uv: ``(n_heads, d_latent, d_v)`` latents up to keys/values.
        w_q: ``(n_heads, d_model, d_nope)`` queries' position-free part.
        w_qr: ``(n_heads, d_model, d_rope)`` queries' rotated part.
        w_kr: ``(d_model, d_rope)`` the one rotated key shared by all heads.
        w_o: ``(n_heads, d_v, d_model)`` the output projection, one slice per head.
    """

    w_down: Tensor
    w_uk: Tensor
    w_uv: Tensor
    w_q: Tensor
    w_qr: Tensor
    w_kr: Tensor
    w_o: Tensor

    @classmethod
    def random(
        cls,
        d_model: int,
        n_heads: int,
        d_latent: int,
        d_nope: int,
        d_rope: int,
        d_v: int,
        *,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> MLAWeights:
        """Random weights scaled by ``1 / sqrt(fan_in)`` (so activations stay near unit size)."""
        for name, value in (
            ("d_model", d_model),
            ("n_heads", n_heads),
            ("d_latent", d_latent),
            ("d_nope", d_nope),
            ("d_rope", d_rope),
            ("d_v", d_v),
        ):
            require_count(name, value, 1)
        if d_rope % 2:
            raise ValueError(f"d_rope must be even (RoPE turns pairs of coordinates), got {d_rope}")
        gen = torch.Generator().manual_seed(seed)

        def init(*shape: int) -> Tensor:
            return (torch.randn(*shape, generator=gen, dtype=torch.float64) / math.sqrt(shape[-2])).to(dtype)

        return cls(
            init(d_model, d_latent),
            init(n_heads, d_latent, d_nope),
            init(n_heads, d_latent, d_v),
            init(n_heads, d_model, d_nope),
            init(n_heads, d_model, d_rope),
            init(d_model, d_rope),
            init(n_heads, d_v, d_model),
        )

    @property
    def n_heads(self) -> int:
        return self.w_uk.shape[0]

    def queries(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x (B, T, d_model)`` -> ``q_nope (B, H, T, d_nope)``, ``q_rope (B, H, T, d_rope)`` (not rotated)."""
        return x[:, None] @ self.w_q, x[:, None] @ self.w_qr

    def cache_entries(self, x: Tensor, start: int) -> tuple[Tensor, Tensor]:
        """What a token leaves in the cache: ``latents (B, T, d_latent)`` and ``k_rope (B, T, d_rope)``
        rotated at positions ``start .. start + T - 1``."""
        positions = torch.arange(start, start + x.shape[-2], device=x.device)
        return x @ self.w_down, apply_rope(x @ self.w_kr, positions)

    def up_projected(self, latents: Tensor, k_rope: Tensor) -> tuple[Tensor, Tensor]:
        """Ordinary per-head keys and values rebuilt from the cache: ``keys (B, H, S, d_nope + d_rope)``
        (the rotated part repeated for every head) and ``values (B, H, S, d_v)``."""
        keys_nope = latents[:, None] @ self.w_uk  # (B, H, S, d_nope)
        k_rope = k_rope[:, None].expand(-1, self.n_heads, -1, -1)  # (B, H, S, d_rope)
        return torch.cat([keys_nope, k_rope], dim=-1), latents[:, None] @ self.w_uv


class LatentKVCache:
    """A preallocated MLA cache: ``latents (B, capacity, d_latent)`` and ``k_rope (B, capacity, d_rope)``
    per layer, written in place, one row per token."""

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        capacity: int,
        d_latent: int,
        d_rope: int,
        *,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        for name, value in (
            ("n_layers", n_layers),
            ("batch_size", batch_size),
            ("capacity", capacity),
            ("d_latent", d_latent),
            ("d_rope", d_rope),
        ):
            require_count(name, value, 1)
        self.capacity, self.length = capacity, 0
        self.latents = torch.zeros(n_layers, batch_size, capacity, d_latent, dtype=dtype)
        self.k_rope = torch.zeros(n_layers, batch_size, capacity, d_rope, dtype=dtype)

    def append(self, layer: int, latents: Tensor, k_rope: Tensor) -> tuple[Tensor, Tensor]:
        """Write ``T`` new rows after the ``length`` cached ones; return the filled part (views)."""
        end = self.length + latents.shape[-2]
        if end > self.capacity:
            raise ValueError(f"the cache holds {self.capacity} tokens; {end} would not fit (length {self.length})")
        self.latents[layer, :, self.length : end] = latents
        self.k_rope[layer, :, self.length : end] = k_rope
        return self.latents[layer, :, :end], self.k_rope[layer, :, :end]

    def advance(self, n_new: int) -> None:
        self.length += n_new

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.latents, self.k_rope))


def mla_forward(
    x: Tensor, weights: MLAWeights, cache: LatentKVCache, layer: int = 0, *, absorbed: bool = True
) -> Tensor:
    """One MLA layer on ``T`` new tokens ``x (B, T, d_model)``: cache their latents, attend over all.

    The caller advances ``cache`` once every layer has run. Returns ``(B, T, d_model)``.
    """
    require_rank("x", require_float("x", x), 3, "(B, T, d_model)")
    q_nope, q_rope = weights.queries(x)
    latents, k_rope = cache.append(layer, *weights.cache_entries(x, cache.length))
    step = mla_absorbed_step if absorbed else mla_naive_step
    return step(q_nope, q_rope, latents, k_rope, weights.w_uk, weights.w_uv, weights.w_o)


def mla_cache_bytes(
    n_layers: int, d_latent: int, d_rope: int, n_tokens: int, bytes_per_element: int = 2, batch_size: int = 1
) -> int:
    r"""Memory of an MLA cache: $\text{layers} \times (d_c + d_R) \times \text{tokens} \times
    \text{bytes} \times \text{batch}$ (one latent and one rotated key per token, for all heads)."""
    for name, value in (
        ("n_layers", n_layers),
        ("d_latent", d_latent),
        ("d_rope", d_rope),
        ("bytes_per_element", bytes_per_element),
        ("batch_size", batch_size),
    ):
        require_count(name, value, 1)
    require_count("n_tokens", n_tokens, 0)
    return n_layers * (d_latent + d_rope) * n_tokens * bytes_per_element * batch_size
