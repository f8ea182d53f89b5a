r"""A small decoder-only transformer (GPT-style) for lesson 09: the model the KV cache speeds up.

Each block is pre-norm: $x \leftarrow x + \mathrm{Attn}(\mathrm{LN}(x))$, then
$x \leftarrow x + \mathrm{MLP}(\mathrm{LN}(x))$. Attention is causal, positions come from RoPE
(applied to queries and keys inside :func:`~attention_course.kv_cache.cached_attention_step`), and
``n_kv_heads`` picks multi-head (``= n_heads``), grouped-query (fewer) or multi-query (1) attention.

There is a single attention code path: a forward pass without a cache is one cached step with an
empty cache and all tokens new, so recomputing and caching run exactly the same arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from ._validation import require_rank, require_tensor, shape_of
from .kv_cache import KVCache, cached_attention_step
from .multihead import merge_heads, split_heads


@dataclass(frozen=True)
class DecoderConfig:
    """Sizes of a :class:`Decoder`. ``n_kv_heads`` defaults to ``n_heads`` (MHA), ``d_ff`` to ``4 * d_model``."""

    vocab_size: int = 64
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    # None picks the default; __post_init__ replaces it, so every reader sees an int.
    n_kv_heads: int = None  # type: ignore[assignment]
    d_ff: int = None  # type: ignore[assignment]
    max_seq_len: int = 256

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"n_heads={self.n_heads} must divide d_model={self.d_model} into an even d_head (RoPE)")
        if self.n_kv_heads <= 0 or self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_kv_heads={self.n_kv_heads} must be positive and divide n_heads={self.n_heads}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


class CausalSelfAttention(nn.Module):
    """Causal self-attention with ``n_heads`` query heads and ``n_kv_heads`` key/value heads.

    ``forward(x (B, T, d_model), cache=None, layer=0) -> (B, T, d_model)``. With a cache, ``x``
    holds only the new tokens; their keys/values go into ``cache`` for ``layer``.
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, d_head = config.n_heads, config.n_kv_heads, config.d_head
        # W_Q, W_K and W_V side by side in one matrix (like GPT-2's c_attn): one matmul per step, not three.
        self.qkv_proj = nn.Linear(config.d_model, (config.n_heads + 2 * config.n_kv_heads) * d_head, bias=False)
        self.o_proj = nn.Linear(config.n_heads * d_head, config.d_model, bias=False)
        # A factor per query head on its output before W_O; None = all ones. Set by heads.ablate_heads (lesson 14).
        self.head_scale: Tensor | None = None

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        heads = split_heads(self.qkv_proj(x), self.n_heads + 2 * self.n_kv_heads)  # (B, H + 2 Hkv, T, d_head)
        q = heads[:, : self.n_heads]  # (B, H, T, d_head)
        k = heads[:, self.n_heads : self.n_heads + self.n_kv_heads]  # (B, Hkv, T, d_head)
        v = heads[:, self.n_heads + self.n_kv_heads :]  # (B, Hkv, T, d_head)
        if cache is None:
            empty = k[:, :, :0]  # no earlier tokens: (B, Hkv, 0, d_head)
            heads = cached_attention_step(q, k, v, empty, empty, 0)[0]
        else:
            heads = cache.attend(layer, q, k, v)
        if self.head_scale is not None:  # (H,) -> scale each head's output (B, H, T, d_head)
            heads = heads * self.head_scale[:, None, None].to(heads.dtype)
        return self.o_proj(merge_heads(heads))  # (B, T, d_model)


class DecoderBlock(nn.Module):
    """Pre-norm block: causal self-attention, then a GELU MLP, each added to the residual stream."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.norm_mlp = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, config.d_ff), nn.GELU(), nn.Linear(config.d_ff, config.d_model)
        )

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        x = x + self.attn(self.norm_attn(x), cache, layer)
        return x + self.mlp(self.norm_mlp(x))


class Decoder(nn.Module):
    """Token embedding, ``n_layers`` :class:`DecoderBlock`, final norm, and a projection to logits.

    ``forward(tokens (B, T), cache=None) -> logits (B, T, vocab_size)``. Without a cache ``tokens``
    is the whole sequence; with one, ``tokens`` are the new tokens after the ``cache.length``
    cached ones, and the cache is advanced by ``T``.
    """

    blocks: Sequence[DecoderBlock]  # for the type checker: an nn.ModuleList of DecoderBlock at run time

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(DecoderBlock(config) for _ in range(config.n_layers))  # type: ignore[assignment]
        self.norm = nn.LayerNorm(config.d_model)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)

    def forward(self, tokens: Tensor, cache: KVCache | None = None) -> Tensor:
        require_rank("tokens", require_tensor("tokens", tokens), 2, "(B, T)")
        if tokens.is_floating_point():
            raise TypeError(f"tokens must be integer ids, got dtype {tokens.dtype} with shape {shape_of(tokens)}")
        start = 0 if cache is None else cache.length
        if start + tokens.shape[1] > self.config.max_seq_len:
            raise ValueError(
                f"{start} cached + {tokens.shape[1]} new tokens exceed max_seq_len={self.config.max_seq_len}"
            )
        x = self.embed(tokens)  # (B, T, d_model)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
        if cache is not None:
            cache.advance(tokens.shape[1])
        return self.lm_head(self.norm(x))  # (B, T, vocab_size)
