r"""A rolling-buffer KV cache: the first ``S`` "sink" tokens plus the last ``W`` tokens (lesson 13).

Sliding-window attention (Mistral) lets token $i$ see keys $i - W + 1 \dots i$ only, so a cache
of ``W`` slots suffices: token $p$ overwrites the slot of token $p - W$, the one that just left
the window. StreamingLLM (Xiao et al., 2023) keeps the first ``S`` tokens as well, forever: models
put a lot of attention weight on the first tokens ("attention sinks") and fall apart when they
are evicted. Together, query $i$ may see key $j$ when

$$j \le i \quad\text{and}\quad \bigl(j < S \;\text{ or }\; i - j < W\bigr),$$

and the cache holds ``S + W`` slots however long the generation runs. Token $p$ lives in slot

$$\text{slot}(p) = p \;\;(p < S), \qquad \text{slot}(p) = S + (p - S) \bmod W \;\;(p \ge S).$$

Two position schemes (``scheme``):

* ``"absolute"`` (Mistral's rolling buffer): keys are rotated by RoPE at their absolute position
  when written; the query at its absolute position. Distances grow without bound for the sinks.
* ``"in_cache"`` (StreamingLLM): keys are cached **before** rotation; at every step the cached
  keys, in the order of their tokens, are rotated at positions ``0 .. n - 1`` (their place in the
  cache) and the query at ``n - 1``. No distance ever exceeds the cache size, the range a model
  was trained on. After the buffer wraps, slot order is not token order, so the keys must be put
  back in token order before they get their positions.

Layout: ``(B, heads, positions, d_head)`` as in :mod:`attention_course.kv_cache`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._validation import require_count, require_rank, require_tensor, shape_of
from .kv_cache import KVCache, grouped_query_attention
from .positional import apply_rope, rope_cos_sin, rotate_half

SCHEMES = ("absolute", "in_cache")


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be 'absolute' (Mistral) or 'in_cache' (StreamingLLM), got {scheme!r}")


def sink_window_mask(n: int, n_sinks: int, window: int) -> Tensor:
    """The dense mask the rolling cache is equivalent to: bool ``(N, N)``, ``True`` where query ``i``
    may see key ``j`` (``j <= i`` and (``j < n_sinks`` or ``i - j < window``))."""
    require_count("n", n, 0)
    require_count("n_sinks", n_sinks, 0)
    require_count("window", window, 1)
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    return (j <= i) & ((j < n_sinks) | (i - j < window))


def ring_slot(position: int, n_sinks: int, window: int) -> int:
    """The buffer slot of the token at ``position``: itself for a sink, else ``S + (p - S) % W``."""
    return position if position < n_sinks else n_sinks + (position - n_sinks) % window


def chronological_slots(position: int, n_sinks: int, window: int) -> Tensor:
    """The filled slots after token ``position`` was written, in the order of their tokens: int ``(n,)``."""
    capacity = n_sinks + window
    if position < capacity:
        return torch.arange(position + 1)
    oldest = position - window + 1  # the oldest token still in the window
    window_slots = n_sinks + (oldest - n_sinks + torch.arange(window)) % window
    return torch.cat([torch.arange(n_sinks), window_slots])


def _check_step(
    q_new: Tensor, k_new: Tensor, v_new: Tensor, k_cache: Tensor, v_cache: Tensor, position: int, n_sinks: int
) -> None:
    for name, t in (("q_new", q_new), ("k_new", k_new), ("v_new", v_new), ("k_cache", k_cache), ("v_cache", v_cache)):
        require_rank(name, require_tensor(name, t), 4, "(B, heads, positions, d_head)")
    require_count("position", position, 0)
    require_count("n_sinks", n_sinks, 0)
    if q_new.shape[-2] != 1 or k_new.shape != v_new.shape or k_new.shape[-2] != 1:
        raise ValueError(
            f"one new token per step: q_new (B, H, 1, d), k_new and v_new (B, Hkv, 1, d), got q_new "
            f"{shape_of(q_new)}, k_new {shape_of(k_new)}, v_new {shape_of(v_new)}"
        )
    if k_cache.shape != v_cache.shape or k_cache.shape[:2] != k_new.shape[:2] or k_cache.shape[-1] != k_new.shape[-1]:
        raise ValueError(
            f"k_cache and v_cache must be (B, Hkv, n_sinks + window, d_head) like k_new {shape_of(k_new)}, "
            f"got {shape_of(k_cache)} and {shape_of(v_cache)}"
        )
    if k_cache.shape[-2] <= n_sinks:
        raise ValueError(
            f"the cache needs room for the {n_sinks} sinks and a window of at least 1, got k_cache {shape_of(k_cache)}"
        )


def _write_and_attend(
    q_new: Tensor,
    k_new: Tensor,
    v_new: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    position: int,
    n_sinks: int,
    scheme: str,
    rope: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Write the new token into its slot (in place) and attend; ``rope`` = precomputed (cos, sin) rows."""
    capacity = k_cache.shape[-2]
    window = capacity - n_sinks

    def rotate(x: Tensor, positions: Tensor) -> Tensor:
        if rope is None:
            return apply_rope(x, positions)
        cos, sin = rope[0][positions], rope[1][positions]
        return x * cos + rotate_half(x) * sin

    slot = ring_slot(position, n_sinks, window)
    order = chronological_slots(position, n_sinks, window).to(k_cache.device)  # (n,) slots in token order
    if scheme == "absolute":
        here = torch.tensor([position], device=q_new.device)
        q_new, k_new = rotate(q_new, here), rotate(k_new, here)
        k_cache[:, :, slot : slot + 1] = k_new
        v_cache[:, :, slot : slot + 1] = v_new
        keys, values = k_cache[:, :, order], v_cache[:, :, order]  # any order would do: no positions involved
    else:
        k_cache[:, :, slot : slot + 1] = k_new  # stored before rotation
        v_cache[:, :, slot : slot + 1] = v_new
        in_cache = torch.arange(len(order), device=q_new.device)  # positions within the cache
        keys, values = rotate(k_cache[:, :, order], in_cache), v_cache[:, :, order]
        q_new = rotate(q_new, in_cache[-1:])
    return grouped_query_attention(q_new, keys, values)


def rolling_attention_step(
    q_new: Tensor,
    k_new: Tensor,
    v_new: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    position: int,
    n_sinks: int,
    scheme: str = "absolute",
) -> tuple[Tensor, Tensor, Tensor]:
    """One decode step with a sink + window rolling buffer (the lesson 13 exercise).

    The buffer has ``capacity = n_sinks + window`` slots. The new token (at absolute ``position``)
    goes to slot :func:`ring_slot`; before the buffer is full, slots ``0 .. position`` are filled and
    the rest unused. Then the new query attends over every filled slot.

    Args:
        q_new: ``(B, n_heads, 1, d_head)`` the new token's query, before RoPE.
        k_new, v_new: ``(B, n_kv_heads, 1, d_head)`` its key (before RoPE) and value.
        k_cache, v_cache: ``(B, n_kv_heads, capacity, d_head)`` the buffer before this step: keys
            rotated at their absolute positions (``"absolute"``) or not rotated (``"in_cache"``).
        position: the new token's absolute position (the number of tokens before it).
        n_sinks: the first ``n_sinks`` tokens are never evicted.
        scheme: ``"absolute"`` or ``"in_cache"`` (see the module docstring).

    Returns:
        ``output (B, n_heads, 1, d_head)`` and the updated ``k_cache``, ``v_cache`` (new tensors;
        the arguments are not changed).
    """
    _check_step(q_new, k_new, v_new, k_cache, v_cache, position, n_sinks)
    _check_scheme(scheme)
    k_cache, v_cache = k_cache.clone(), v_cache.clone()
    return _write_and_attend(q_new, k_new, v_new, k_cache, v_cache, position, n_sinks, scheme), k_cache, v_cache


def rolling_reference(q: Tensor, k: Tensor, v: Tensor, n_sinks: int, window: int, scheme: str = "absolute") -> Tensor:
    """Dense attention over a whole sequence with the sink + window mask, positions as in ``scheme``.

    ``"absolute"``: RoPE at absolute positions, then the :func:`sink_window_mask`. ``"in_cache"``: for
    each query, its visible keys in token order get positions ``0 .. n - 1`` and the query ``n - 1``
    (computed row by row, as the scheme defines it, without any buffer).

    Args:
        q: ``(B, n_heads, N, d_head)``; k, v: ``(B, n_kv_heads, N, d_head)``, none rotated.

    Returns:
        ``(B, n_heads, N, d_head)``: row ``i`` is what the rolling cache must output at step ``i``.
    """
    _check_scheme(scheme)
    n = q.shape[-2]
    mask = sink_window_mask(n, n_sinks, window).to(q.device)
    if scheme == "absolute":
        return grouped_query_attention(apply_rope(q), apply_rope(k), v, mask)
    rows = []
    for i in range(n):
        visible = mask[i].nonzero().flatten()  # token order
        ranks = torch.arange(len(visible), device=q.device)
        q_i = apply_rope(q[:, :, i : i + 1], ranks[-1:])
        rows.append(grouped_query_attention(q_i, apply_rope(k[:, :, visible], ranks), v[:, :, visible]))
    return torch.cat(rows, dim=-2)


class RollingKVCache(KVCache):
    """A decoder cache of ``n_sinks + window`` slots per layer that never grows (plugs into
    :class:`~attention_course.decoder.Decoder` like the caches of lesson 09).

    Several new tokens (a prompt) are written one at a time, each attending as a decode step would.
    """

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        d_head: int,
        n_sinks: int,
        window: int,
        *,
        scheme: str = "absolute",
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(n_layers)
        for name, value in (
            ("batch_size", batch_size),
            ("n_kv_heads", n_kv_heads),
            ("d_head", d_head),
            ("window", window),
        ):
            require_count(name, value, 1)
        require_count("n_sinks", n_sinks, 0)
        _check_scheme(scheme)
        self.n_sinks, self.window, self.scheme = n_sinks, window, scheme
        shape = (n_layers, batch_size, n_kv_heads, n_sinks + window, d_head)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self._rope: tuple[Tensor, Tensor] | None = None
        if scheme == "in_cache":  # positions never exceed the capacity: compute their angles once
            cos, sin = rope_cos_sin(torch.arange(n_sinks + window), d_head, dtype=dtype)
            self._rope = (cos.to(device), sin.to(device))

    def attend(self, layer: int, q_new: Tensor, k_new: Tensor, v_new: Tensor) -> Tensor:
        outputs = []
        for t in range(q_new.shape[-2]):
            outputs.append(
                _write_and_attend(
                    q_new[:, :, t : t + 1],
                    k_new[:, :, t : t + 1],
                    v_new[:, :, t : t + 1],
                    self.keys[layer],
                    self.values[layer],
                    self.length + t,
                    self.n_sinks,
                    self.scheme,
                    self._rope,
                )
            )
        return torch.cat(outputs, dim=-2)

    def tensors(self) -> list[Tensor]:
        return [self.keys, self.values]
