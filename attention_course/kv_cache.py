r"""The KV cache: compute each token's keys and values once, then reuse them (lesson 09).

A decoder-only model writes one token at a time. At step $t$ the new token's query $q_t$ must
attend over the keys and values of **all** tokens so far,

$$o_t = \mathrm{softmax}\!\left(\frac{q_t K_{1:t}^\top}{\sqrt{d_{\text{head}}}}\right) V_{1:t},$$

but under a causal mask the rows $k_1 \dots k_{t-1}$, $v_1 \dots v_{t-1}$ are exactly what the
previous steps computed: nothing that comes later can change them. So keep them (the cache),
compute only $k_t, v_t$ for the new token, append, and attend. A step then costs $O(t)$ attention
work instead of recomputing all $t$ tokens ($O(t^2)$).

Layout everywhere: ``(B, heads, positions, d_head)``; positions are axis ``-2``. Keys are cached
**after** RoPE, so a cached key never needs to be rotated again.

Memory: $2 \times \text{layers} \times \text{kv\_heads} \times d_{\text{head}} \times
\text{tokens} \times \text{bytes per number}$ per sequence (:func:`kv_cache_bytes`); multi-query
and grouped-query attention shrink it by sharing each cached key/value head across several
query heads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor

from ._validation import require_count, require_positive, require_rank, require_tensor, shape_of
from .attention import apply_mask
from .masking import causal_mask
from .positional import apply_rope, rope_cos_sin, rotate_half
from .qkv import scaled_attention_scores
from .softmax import softmax

StepFn = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, int], tuple[Tensor, Tensor, Tensor]]


def _grouped_mask(mask: Tensor, batch: int, n_heads: int, n_kv_heads: int, length: int, n_keys: int) -> Tensor:
    """``mask`` in the grouped layout ``(B|1, Hkv|1, group|1, L|1, S|1)`` of the scores' 5-D view.

    A mask of rank 1 or 2 is ``(S,)`` or ``(L, S)``; a mask of rank 4 is ``(B|1, n_heads|1, L|1, S|1)``.
    Anything else is refused: a ``(B, 1, 1, S)`` padding mask must not line its batch axis up with
    the key/value heads (which broadcasting it against 5-D scores would silently do).
    """
    if mask.dim() <= 2:
        return mask
    if mask.dim() != 4:
        raise ValueError(
            f"mask must be (S,), (L, S) or (B, heads, L, S) with 1 for any broadcast axis, got mask {shape_of(mask)} "
            f"for q with B={batch}, {n_heads} heads, L={length} and S={n_keys}"
        )
    mask_batch, mask_heads, mask_rows, mask_keys = mask.shape
    if (
        mask_batch not in (1, batch)
        or mask_heads not in (1, n_heads)
        or mask_rows not in (1, length)
        or mask_keys not in (1, n_keys)
    ):
        raise ValueError(
            f"mask {shape_of(mask)} does not broadcast to (B, heads, L, S) = ({batch}, {n_heads}, {length}, {n_keys})"
        )
    if mask_heads == 1:
        return mask[:, :, None]  # (B|1, 1, 1, L|1, S|1)
    return mask.reshape(mask_batch, n_kv_heads, n_heads // n_kv_heads, mask_rows, mask_keys)


def grouped_query_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """Attention where each key/value head serves a group of ``n_heads // n_kv_heads`` query heads.

    Query heads ``g * group .. (g + 1) * group - 1`` share key/value head ``g`` (the layout of
    Llama 2/3 and Mistral). The group is folded into the query rows: the ``group`` query heads of
    key/value head ``g`` become ``group * L`` rows of one matrix multiplied by that head's keys, so
    no key or value is copied per query head (a broadcast ``k[:, :, None]`` would be materialised
    by ``matmul``, ``group`` times the cache). ``n_kv_heads == n_heads`` is ordinary multi-head
    attention, ``n_kv_heads == 1`` multi-query.

    Args:
        q: ``(B, n_heads, L, d_head)``.
        k: ``(B, n_kv_heads, S, d_head)``.
        v: ``(B, n_kv_heads, S, d_head)``.
        mask: bool, ``True`` = may attend: ``(S,)``, ``(L, S)``, or ``(B, n_heads, L, S)`` with 1 on
            any axis it broadcasts over (e.g. a ``(B, 1, 1, S)`` padding mask).

    Returns:
        ``(B, n_heads, L, d_head)``.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        require_rank(name, require_tensor(name, t), 4, "(B, heads, positions, d_head)")
    batch, n_heads, length, d_head = q.shape
    n_kv_heads, n_keys = k.shape[1], k.shape[2]
    if n_kv_heads == 0 or n_heads % n_kv_heads or v.shape[1] != n_kv_heads:
        raise ValueError(
            f"the number of key/value heads must divide the number of query heads, got q {shape_of(q)}, "
            f"k {shape_of(k)} and v {shape_of(v)}"
        )
    group = n_heads // n_kv_heads
    folded_q = q.reshape(batch, n_kv_heads, group * length, d_head)  # (B, Hkv, group * L, d_head): a view
    # The steps of scaled_dot_product_attention without its NaN scan of q, k and v: this runs once
    # per layer per generated token, and three extra passes over the cache would cost more than the step.
    scores = scaled_attention_scores(folded_q, k)  # (B, Hkv, group * L, S): k is read, never copied
    if mask is not None:
        require_tensor("mask", mask)
        grouped = scores.view(batch, n_kv_heads, group, length, n_keys)  # the same numbers, one axis per head
        scores = apply_mask(grouped, _grouped_mask(mask, batch, n_heads, n_kv_heads, length, n_keys))
        scores = scores.view(batch, n_kv_heads, group * length, n_keys)
    out = softmax(scores, dim=-1) @ v  # (B, Hkv, group * L, d_head)
    return out.reshape(batch, n_heads, length, d_head)


def _check_step(q_new: Tensor, k_new: Tensor, v_new: Tensor, k_cache: Tensor, v_cache: Tensor, length: int) -> None:
    """Cheap shape checks (this runs once per layer per generated token)."""
    for name, t in (("q_new", q_new), ("k_new", k_new), ("v_new", v_new), ("k_cache", k_cache), ("v_cache", v_cache)):
        require_rank(name, require_tensor(name, t), 4, "(B, heads, positions, d_head)")
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise TypeError(f"length must be a non-negative int (tokens already cached), got {length!r}")
    if k_new.shape != v_new.shape or k_new.shape[-2] != q_new.shape[-2] or k_new.shape[0] != q_new.shape[0]:
        raise ValueError(
            f"k_new and v_new must be (B, n_kv_heads, T, d_head) with q_new's B and T, got q_new {shape_of(q_new)}, "
            f"k_new {shape_of(k_new)} and v_new {shape_of(v_new)}"
        )
    if k_cache.shape != v_cache.shape or k_cache.shape[:2] != k_new.shape[:2] or k_cache.shape[-1] != k_new.shape[-1]:
        raise ValueError(
            f"k_cache and v_cache must be (B, n_kv_heads, capacity, d_head) like k_new {shape_of(k_new)}, "
            f"got k_cache {shape_of(k_cache)} and v_cache {shape_of(v_cache)}"
        )
    if k_cache.shape[-2] < length:
        raise ValueError(f"length={length} is more than the cache holds: k_cache {shape_of(k_cache)}")


def rotate_new_tokens(q_new: Tensor, k_new: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """RoPE for ``T`` new tokens that sit at positions ``length .. length + T - 1`` (not ``0 .. T - 1``).

    Args:
        q_new: ``(B, n_heads, T, d_head)``; k_new: ``(B, n_kv_heads, T, d_head)``.
        length: the number of tokens before them.

    Returns:
        the rotated ``q_new`` and ``k_new``, same shapes.
    """
    positions = torch.arange(length, length + q_new.shape[-2], device=q_new.device)  # (T,)
    return apply_rope(q_new, positions), apply_rope(k_new, positions)


def attend_new_tokens(q_new: Tensor, keys: Tensor, values: Tensor, length: int) -> Tensor:
    """Causal attention of ``T`` new queries over all ``length + T`` keys (cached ones first).

    New query ``i`` sits at position ``length + i`` and may see keys ``0 .. length + i``: its mask
    row is row ``length + i`` of the full causal mask (aligned bottom-right, not top-left). A
    single new query (``T = 1``) sees every key, so it needs no mask at all.

    Args:
        q_new: ``(B, n_heads, T, d_head)``, already rotated.
        keys, values: ``(B, n_kv_heads, length + T, d_head)``.
        length: how many of the keys were cached before this step.

    Returns:
        ``(B, n_heads, T, d_head)``.
    """
    n_new, n_keys = q_new.shape[-2], keys.shape[-2]
    mask = None if n_new == 1 else causal_mask(n_keys, device=q_new.device)[length:]  # (T, length + T)
    return grouped_query_attention(q_new, keys, values, mask)


def cached_attention_step(
    q_new: Tensor, k_new: Tensor, v_new: Tensor, k_cache: Tensor, v_cache: Tensor, length: int
) -> tuple[Tensor, Tensor, Tensor]:
    """One cached attention step: rotate the new tokens, append them to the cache, attend over it.

    This is the lesson 09 exercise, and what the decoder's attention runs for every layer and every
    step (a prompt is one step with ``T`` = its length and an empty cache). Nothing is changed in
    place: the keys and values of all tokens so far are returned, to be the next step's cache.

    Args:
        q_new: ``(B, n_heads, T, d_head)`` queries of the ``T`` new tokens, before RoPE.
        k_new: ``(B, n_kv_heads, T, d_head)`` their keys, before RoPE.
        v_new: ``(B, n_kv_heads, T, d_head)`` their values.
        k_cache: ``(B, n_kv_heads, capacity, d_head)`` rotated keys; positions ``0 .. length - 1``
            hold the earlier tokens, anything after them is unused space (a preallocated buffer).
        v_cache: ``(B, n_kv_heads, capacity, d_head)`` values, laid out like ``k_cache``.
        length: number of tokens already cached (the new tokens sit at ``length .. length + T - 1``).

    Returns:
        ``output (B, n_heads, T, d_head)``, ``keys (B, n_kv_heads, length + T, d_head)`` (rotated)
        and ``values (B, n_kv_heads, length + T, d_head)``: the cached tokens, then the new ones.
    """
    _check_step(q_new, k_new, v_new, k_cache, v_cache, length)
    q_new, k_new = rotate_new_tokens(q_new, k_new, length)
    keys = torch.cat([k_cache[:, :, :length], k_new], dim=-2)  # (B, Hkv, length + T, d_head)
    values = torch.cat([v_cache[:, :, :length], v_new], dim=-2)
    return attend_new_tokens(q_new, keys, values, length), keys, values


def kv_cache_bytes(
    n_layers: int, n_kv_heads: int, d_head: int, n_tokens: int, bytes_per_element: int = 2, batch_size: int = 1
) -> int:
    r"""Memory of a KV cache: $2 \times \text{layers} \times \text{kv\_heads} \times d_{\text{head}}
    \times \text{tokens} \times \text{bytes} \times \text{batch}$ (the 2 counts keys and values).

    Args:
        n_layers: transformer blocks, each with its own cache.
        n_kv_heads: key/value heads per layer (``n_heads`` for MHA, fewer for GQA, 1 for MQA).
        d_head: width of one head.
        n_tokens: cached positions per sequence (prompt + generated, or a preallocated capacity).
        bytes_per_element: 2 for float16/bfloat16, 4 for float32.
        batch_size: sequences decoded together.

    Returns:
        bytes, an int.
    """
    for name, value in (
        ("n_layers", n_layers),
        ("n_kv_heads", n_kv_heads),
        ("d_head", d_head),
        ("batch_size", batch_size),
    ):
        require_count(name, value)
    require_count("n_tokens", n_tokens, 0)
    require_positive("bytes_per_element", bytes_per_element)
    return 2 * n_layers * n_kv_heads * d_head * n_tokens * bytes_per_element * batch_size


class KVCache(ABC):
    """What the decoder needs from a cache: ``attend`` for each layer, then ``advance`` once per step.

    ``length`` is the number of tokens cached so far; the new tokens of a step sit right after them.
    """

    def __init__(self, n_layers: int) -> None:
        require_count("n_layers", n_layers)
        self.n_layers = n_layers
        self.length = 0

    @abstractmethod
    def attend(self, layer: int, q_new: Tensor, k_new: Tensor, v_new: Tensor) -> Tensor:
        """Add the new tokens' keys/values to ``layer``'s cache and attend; shapes as in
        :func:`cached_attention_step`. Returns ``(B, n_heads, T, d_head)``."""

    def advance(self, n_new: int) -> None:
        """Count ``n_new`` tokens as cached (every layer has seen them)."""
        self.length += n_new

    @abstractmethod
    def tensors(self) -> list[Tensor]:
        """The tensors that hold the cache."""

    def memory_bytes(self) -> int:
        """Bytes held by the cache's tensors (``numel * element_size``)."""
        return sum(t.numel() * t.element_size() for t in self.tensors())


class GrowingKVCache(KVCache):
    """Concatenate each step's keys/values onto the cache: simple, but every step allocates a new,
    larger tensor per layer and copies the old one into it.

    ``step_fn`` is the cached attention step it runs (a learner's ``cached_attention_step`` drops in).
    """

    def __init__(self, n_layers: int, step_fn: StepFn = cached_attention_step) -> None:
        super().__init__(n_layers)
        self.step_fn = step_fn
        self.keys: list[Tensor | None] = [None] * n_layers  # each (B, Hkv, length, d_head)
        self.values: list[Tensor | None] = [None] * n_layers

    def attend(self, layer: int, q_new: Tensor, k_new: Tensor, v_new: Tensor) -> Tensor:
        k_cache, v_cache = self.keys[layer], self.values[layer]
        if k_cache is None or v_cache is None:
            k_cache = v_cache = k_new[:, :, :0]  # an empty cache: (B, Hkv, 0, d_head)
        output, self.keys[layer], self.values[layer] = self.step_fn(q_new, k_new, v_new, k_cache, v_cache, self.length)
        return output

    def tensors(self) -> list[Tensor]:
        return [t for t in self.keys + self.values if t is not None]


class PreallocatedKVCache(KVCache):
    """One buffer per layer for keys and values, allocated once for ``capacity`` tokens; each step
    writes its keys/values into the next free positions and attends over the filled part (a view).
    Nothing is allocated or copied per step beyond the new tokens themselves, and the RoPE angles
    of every position are computed once, up front (as production inference code does).
    """

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        capacity: int,
        d_head: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(n_layers)
        for name, value in (
            ("batch_size", batch_size),
            ("n_kv_heads", n_kv_heads),
            ("capacity", capacity),
            ("d_head", d_head),
        ):
            require_count(name, value)
        self.capacity = capacity
        shape = (n_layers, batch_size, n_kv_heads, capacity, d_head)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)  # (layers, B, Hkv, capacity, d_head)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        cos, sin = rope_cos_sin(torch.arange(capacity), d_head)  # (capacity, d_head) each
        self.cos, self.sin = cos.to(device=device, dtype=dtype), sin.to(device=device, dtype=dtype)

    def attend(self, layer: int, q_new: Tensor, k_new: Tensor, v_new: Tensor) -> Tensor:
        start, end = self.length, self.length + q_new.shape[-2]
        if end > self.capacity:
            raise ValueError(
                f"the cache holds {self.capacity} tokens; {end} would not fit (length {start} + {end - start} new)"
            )
        cos, sin = self.cos[start:end], self.sin[start:end]  # the rows apply_rope would compute
        q_new, k_new = (x * cos + rotate_half(x) * sin for x in (q_new, k_new))  # apply_rope's formula
        self.keys[layer, :, :, start:end] = k_new  # written in place: no new buffer
        self.values[layer, :, :, start:end] = v_new
        return attend_new_tokens(q_new, self.keys[layer, :, :, :end], self.values[layer, :, :, :end], start)

    def tensors(self) -> list[Tensor]:
        return [self.keys, self.values]
