"""Generation with a decoder: prefill the prompt, then decode token by token (lesson 09).

With a cache (``attention_course.kv_cache``) each step feeds one token and attends over the
cached keys and values; without it, each step recomputes the whole sequence. Both give the same
tokens: the lesson and ``tests/test_kv_cache.py`` check it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._validation import require_rank, require_tensor, shape_of
from .decoder import Decoder
from .kv_cache import GrowingKVCache, KVCache, PreallocatedKVCache, StepFn, cached_attention_step
from .softmax import softmax


def new_cache(
    model: Decoder,
    batch_size: int,
    kind: str = "preallocated",
    capacity: int | None = None,
    step_fn: StepFn = cached_attention_step,
) -> KVCache:
    """An empty cache shaped for ``model``.

    Args:
        model: the :class:`~attention_course.decoder.Decoder` to cache for.
        batch_size: sequences decoded together.
        kind: ``"preallocated"`` or ``"growing"``.
        capacity: tokens a preallocated cache can hold (default ``model.config.max_seq_len``).
        step_fn: the attention step a growing cache runs.

    Returns:
        a :class:`GrowingKVCache` or :class:`PreallocatedKVCache`.
    """
    config = model.config
    if kind == "growing":
        return GrowingKVCache(config.n_layers, step_fn)
    if kind == "preallocated":
        weight = model.lm_head.weight
        return PreallocatedKVCache(
            config.n_layers,
            batch_size,
            config.n_kv_heads,
            capacity or config.max_seq_len,
            config.d_head,
            dtype=weight.dtype,
            device=weight.device,
        )
    raise ValueError(f"kind must be 'preallocated' or 'growing', got {kind!r}")


def prefill(model: Decoder, prompt: Tensor, cache: KVCache) -> Tensor:
    """Run the whole prompt through ``model`` in one pass, filling ``cache``.

    Args:
        model: a :class:`~attention_course.decoder.Decoder`.
        prompt: int ``(B, P)`` token ids.
        cache: an empty cache.

    Returns:
        logits ``(B, P, vocab_size)``; the last row predicts the first new token.
    """
    if cache.length:
        raise ValueError(f"prefill needs an empty cache, this one already holds {cache.length} tokens")
    return model(prompt, cache=cache)


def decode_step(model: Decoder, token: Tensor, cache: KVCache) -> Tensor:
    """Feed one new token per sequence; only its query, key and value are computed.

    Args:
        model: a :class:`~attention_course.decoder.Decoder`.
        token: int ``(B, 1)``, the token just chosen.
        cache: the cache after the prompt and earlier steps.

    Returns:
        logits ``(B, vocab_size)`` for the next token.
    """
    require_rank("token", require_tensor("token", token), 2, "(B, 1)")
    if token.shape[1] != 1:
        raise ValueError(f"token must be one new token per sequence, shape (B, 1), got {shape_of(token)}")
    return model(token, cache=cache)[:, -1]


def next_token(logits: Tensor, temperature: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """Pick the next token from ``logits (B, vocab_size)``: argmax when ``temperature == 0``
    (greedy), else a sample from ``softmax(logits / temperature)``. Returns int ``(B, 1)``."""
    if temperature == 0.0:
        return logits.argmax(dim=-1, keepdim=True)
    probs = softmax(logits, dim=-1, temperature=temperature)
    return torch.multinomial(probs, 1, generator=generator)


@torch.inference_mode()
def generate(
    model: Decoder,
    prompt: Tensor,
    n_new: int,
    *,
    use_cache: bool = True,
    cache_kind: str = "preallocated",
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    step_fn: StepFn = cached_attention_step,
) -> tuple[Tensor, Tensor]:
    """Generate ``n_new`` tokens after ``prompt``, greedily or by sampling.

    Without the cache, every step runs the model over the whole sequence so far and keeps only
    the last position's logits; with it, the prompt is prefilled once and each step feeds one token.

    Args:
        model: a :class:`~attention_course.decoder.Decoder`.
        prompt: int ``(B, P)``, ``P >= 1``.
        n_new: tokens to generate.
        use_cache: decode with a KV cache (else recompute everything each step).
        cache_kind: ``"preallocated"`` or ``"growing"`` (with ``use_cache``).
        temperature: 0 for greedy, else the sampling temperature.
        generator: random source for sampling (seed it for repeatable samples).
        step_fn: the attention step a growing cache runs.

    Returns:
        ``tokens`` int ``(B, n_new)`` and the ``logits (B, n_new, vocab_size)`` each was chosen from.
    """
    require_rank("prompt", require_tensor("prompt", prompt), 2, "(B, P)")
    if prompt.shape[1] == 0 or prompt.is_floating_point():
        raise ValueError(f"prompt must be int token ids (B, P) with P >= 1, got {prompt.dtype} {shape_of(prompt)}")
    total = prompt.shape[1] + n_new
    if n_new < 1 or total > model.config.max_seq_len:
        raise ValueError(
            f"need 1 <= n_new and prompt + n_new <= max_seq_len={model.config.max_seq_len}, "
            f"got prompt {shape_of(prompt)} and n_new={n_new}"
        )
    batch = prompt.shape[0]
    sequence = torch.empty(batch, total, dtype=prompt.dtype, device=prompt.device)  # prompt, then new tokens
    sequence[:, : prompt.shape[1]] = prompt
    all_logits = []
    if use_cache:
        cache = new_cache(model, batch, cache_kind, total, step_fn)
        logits = prefill(model, prompt, cache)[:, -1]  # (B, V)
    else:
        logits = model(prompt)[:, -1]
    for step in range(n_new):
        all_logits.append(logits)
        position = prompt.shape[1] + step
        sequence[:, position : position + 1] = next_token(logits, temperature, generator)
        if step + 1 == n_new:
            break
        if use_cache:
            logits = decode_step(model, sequence[:, position : position + 1], cache)
        else:
            logits = model(sequence[:, : position + 1])[:, -1]  # recompute all tokens so far
    return sequence[:, prompt.shape[1] :], torch.stack(all_logits, dim=1)
