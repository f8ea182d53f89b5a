r"""What heads learn: induction heads in a small trained decoder (lesson 14).

A sequence that repeats a random segment, ``[BOS] a b c d a b c d``, can be continued by copying:
at the second ``b``, find where ``b`` came before, look at the token **after** it (``c``), and
predict that. Two heads working together do it. A **previous-token head** in layer 0 writes into
each position which token came just before it; an **induction head** in layer 1 then matches the
current token against that "token before me" and attends to the position after the earlier copy.

This module makes the data, trains the course's own :class:`~attention_course.decoder.Decoder`
on it, reads every head's attention weights, scores the heads, and switches heads off:

* :func:`repeated_sequences` / :func:`training_batch`: the data.
* :func:`attention_weights`: every layer's weights ``(layers, B, heads, T, T)``.
* :func:`previous_token_score`, :func:`induction_score`: how much of a head's weight lands where
  each mechanism would put it, on held-out sequences.
* :func:`ablated_attention` (the exercise) and :func:`ablate_heads` (on a whole model): zero a
  head's output before the output projection.
* :func:`train_induction`: the seeded training loop of the lesson and of ``scripts/train_induction.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ._validation import require_float, require_rank, require_tensor, shape_of
from .attention import apply_mask
from .decoder import Decoder, DecoderConfig
from .masking import causal_mask
from .multihead import merge_heads, split_heads
from .positional import apply_rope
from .qkv import scaled_attention_scores
from .softmax import softmax

BOS = 0  # token id 0 starts every sequence; the random tokens are 1 .. vocab_size - 1
WEIGHTS = Path(__file__).parent / "data" / "induction_decoder.safetensors"

# The model of lesson 14 and of the shipped weights: attention-heavy (a small MLP), 2 layers.
INDUCTION_CONFIG = DecoderConfig(vocab_size=48, d_model=64, n_layers=2, n_heads=2, d_ff=64, max_seq_len=64)
# How the shipped weights were trained (scripts/train_induction.py). With AdamW's usual weak weight decay
# (0.01) both heads of layer 1 become induction heads in every seed tried: the task gives layer 1 nothing
# else to do. A strong decay charges every head for its weights, so two heads doing one job pay twice;
# they compete, one takes the job and the other fades (slowly: thousands of steps, sooner in some seeds).
INDUCTION_WEIGHT_DECAY = 0.5
INDUCTION_STEPS = 3000


# --------------------------------------------------------------------------------------------- data
def repeated_sequences(batch: int, period: int, vocab_size: int, generator: torch.Generator) -> Tensor:
    """``batch`` sequences ``[BOS, x_1 .. x_period, x_1 .. x_period]`` of random tokens ``1 .. vocab_size - 1``.

    Returns:
        int64 ``(batch, 1 + 2 * period)``.
    """
    if period < 2 or vocab_size < 3:
        raise ValueError(f"need period >= 2 and vocab_size >= 3, got period={period}, vocab_size={vocab_size}")
    segment = torch.randint(1, vocab_size, (batch, period), generator=generator)
    bos = torch.full((batch, 1), BOS, dtype=segment.dtype)
    return torch.cat([bos, segment, segment], dim=1)


def training_batch(
    batch: int, length: int, vocab_size: int, periods: tuple[int, int], generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Sequences of ``length`` tokens: ``[BOS]``, a random segment of a random period in ``periods``
    (inclusive), the same segment again, then fresh random tokens up to ``length``.

    The period changes from sequence to sequence, so no head can copy by looking a fixed distance back:
    it has to find the earlier copy of the current token.

    Returns:
        ``tokens`` int64 ``(batch, length)`` and ``copyable`` bool ``(batch, length - 1)``: ``True`` where
        the next token can be predicted by copying (the current and next token are both in the repeat).
    """
    low, high = periods
    if not 2 <= low <= high or 1 + 2 * high > length:
        raise ValueError(
            f"need 2 <= periods[0] <= periods[1] and 1 + 2 * periods[1] <= length, "
            f"got periods={periods}, length={length}"
        )
    tokens = torch.randint(1, vocab_size, (batch, length), generator=generator)
    tokens[:, 0] = BOS
    chosen = torch.randint(low, high + 1, (batch,), generator=generator)
    copyable = torch.zeros(batch, length - 1, dtype=torch.bool)
    for row, period in enumerate(chosen.tolist()):
        tokens[row, 1 + period : 1 + 2 * period] = tokens[row, 1 : 1 + period]
        copyable[row, 1 + period : 2 * period] = True  # predicting positions 2 + period .. 2 * period
    return tokens, copyable


# ------------------------------------------------------------------------------------ reading heads
@torch.no_grad()
def attention_weights(model: Decoder, tokens: Tensor) -> Tensor:
    """Every layer's attention weights on ``tokens (B, T)``: ``(layers, B, n_heads, T, T)``.

    Recomputes each block's queries and keys exactly as the model does (pre-norm, RoPE at positions
    ``0 .. T - 1``, causal mask), then runs the block itself to get the next layer's input.
    """
    require_rank("tokens", require_tensor("tokens", tokens), 2, "(B, T)")
    config = model.config
    group = config.n_heads // config.n_kv_heads
    x = model.embed(tokens)  # (B, T, d_model)
    mask = causal_mask(tokens.shape[1], device=tokens.device)
    layers = []
    for block in model.blocks:
        heads = split_heads(block.attn.qkv_proj(block.norm_attn(x)), config.n_heads + 2 * config.n_kv_heads)
        q = apply_rope(heads[:, : config.n_heads])  # (B, H, T, d_head)
        k = apply_rope(heads[:, config.n_heads : config.n_heads + config.n_kv_heads]).repeat_interleave(group, dim=1)
        layers.append(softmax(apply_mask(scaled_attention_scores(q, k), mask), dim=-1))  # (B, H, T, T)
        x = block(x)
    return torch.stack(layers)


def _check_scores_input(attention: Tensor) -> None:
    require_rank("attention", require_float("attention", attention), 4, "(B, heads, T, T)")
    if attention.shape[-1] != attention.shape[-2] or attention.shape[-1] < 2:
        raise ValueError(
            f"attention must be self-attention weights (B, heads, T, T) with T >= 2, got shape {shape_of(attention)}"
        )


def previous_token_score(attention: Tensor) -> Tensor:
    """Mean weight each head puts on the token just before the query: ``(B, H, T, T) -> (H,)``.

    Averaged over every query that has a previous token (positions ``1 .. T - 1``) and the batch.
    A perfect previous-token head scores 1.
    """
    _check_scores_input(attention)
    return torch.diagonal(attention, offset=-1, dim1=-2, dim2=-1).mean(dim=(0, -1))


def repeat_mask(tokens: Tensor, period: int) -> Tensor:
    """``True`` at positions ``q >= period`` whose token equals the token ``period`` earlier: ``(B, T)`` bool."""
    require_rank("tokens", require_tensor("tokens", tokens), 2, "(B, T)")
    if not isinstance(period, int) or isinstance(period, bool) or not 1 <= period < tokens.shape[1]:
        raise ValueError(f"period must be an int in 1 .. T - 1 = {tokens.shape[1] - 1}, got {period!r}")
    repeats = torch.zeros_like(tokens, dtype=torch.bool)
    repeats[:, period:] = tokens[:, period:] == tokens[:, :-period]
    return repeats


def induction_score(attention: Tensor, tokens: Tensor, period: int) -> Tensor:
    """Mean weight each head puts where an induction head looks: ``(B, H, T, T) -> (H,)``.

    A query at position ``q`` inside the repeated copy (its token equals the token ``period``
    positions earlier) should attend to position ``q - period + 1``: the token that came **after**
    the earlier copy of the current token, the one to copy next. The score averages that weight over
    all such queries of the batch (not over the first, unrepeated copy, nor over ``[BOS]`` or
    padding). A perfect induction head scores 1.

    Args:
        attention: one layer's weights ``(B, H, T, T)``.
        tokens: the token ids ``(B, T)`` the weights were computed on.
        period: the distance between the two copies.

    Returns:
        ``(H,)``.

    Raises:
        ValueError: when no position repeats the token ``period`` positions before it.
    """
    _check_scores_input(attention)
    require_rank("tokens", require_tensor("tokens", tokens), 2, "(B, T)")
    if tokens.shape != attention.shape[:1] + attention.shape[-1:]:
        raise ValueError(f"tokens {shape_of(tokens)} must be (B, T) of attention {shape_of(attention)}")
    repeats = repeat_mask(tokens, period)  # (B, T)
    if not repeats.any():
        raise ValueError(
            f"no token equals the token period={period} positions before it: these sequences have "
            "no repeated segment to score an induction head on"
        )
    # weight of query q on key q - period + 1, for q = period .. T - 1: (B, H, T - period)
    on_target = torch.diagonal(attention, offset=-(period - 1), dim1=-2, dim2=-1)[..., 1:]
    chosen = repeats[:, None, period:].to(attention.dtype)  # (B, 1, T - period)
    return (on_target * chosen).sum(dim=(0, -1)) / chosen.sum()


# -------------------------------------------------------------------------------------------- ablation
def ablated_attention(q: Tensor, k: Tensor, v: Tensor, o_weight: Tensor, head: int) -> Tensor:
    """Causal multi-head attention with one head switched off: its output is zeroed before ``W_O``.

    Args:
        q, k, v: ``(B, H, T, d_head)`` (already rotated, as the decoder's attention computes them).
        o_weight: the output projection's weight ``(d_model, H * d_head)`` (``nn.Linear`` layout).
        head: the head to switch off, ``0 .. H - 1``.

    Returns:
        ``(B, T, d_model)``: what the layer adds to the residual stream without that head.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        require_rank(name, require_float(name, t), 4, "(B, heads, T, d_head)")
    n_heads = q.shape[1]
    if not isinstance(head, int) or isinstance(head, bool) or not 0 <= head < n_heads:
        raise IndexError(f"head must be an int in 0 .. {n_heads - 1} (q has {n_heads} heads), got {head!r}")
    require_rank("o_weight", require_float("o_weight", o_weight), 2, "(d_model, H * d_head)")
    if o_weight.shape[1] != n_heads * q.shape[-1]:
        raise ValueError(f"o_weight {shape_of(o_weight)} must have H * d_head = {n_heads * q.shape[-1]} columns")
    weights = softmax(apply_mask(scaled_attention_scores(q, k), causal_mask(q.shape[-2], k.shape[-2])), dim=-1)
    heads = weights @ v  # (B, H, T, d_head)
    keep = torch.ones(n_heads, dtype=heads.dtype, device=heads.device)
    keep[head] = 0.0
    return merge_heads(heads * keep[:, None, None]) @ o_weight.T


@contextmanager
def ablate_heads(model: Decoder, heads: Sequence[tuple[int, int]]) -> Iterator[Decoder]:
    """Inside the ``with`` block, the ``(layer, head)`` pairs of ``model`` output zeros (before ``W_O``)."""
    config = model.config
    scales = [torch.ones(config.n_heads) for _ in range(config.n_layers)]
    for layer, head in heads:
        if not 0 <= layer < config.n_layers or not 0 <= head < config.n_heads:
            raise IndexError(
                f"(layer, head) = ({layer}, {head}) is not in a model with {config.n_layers} layers "
                f"of {config.n_heads} heads"
            )
        scales[layer][head] = 0.0
    previous = [block.attn.head_scale for block in model.blocks]
    try:
        for block, scale in zip(model.blocks, scales, strict=True):
            block.attn.head_scale = scale
        yield model
    finally:
        for block, old in zip(model.blocks, previous, strict=True):
            block.attn.head_scale = old


@torch.no_grad()
def copying_loss(model: Decoder, tokens: Tensor, period: int) -> tuple[float, float]:
    """Mean cross-entropy on ``[BOS] + segment + segment`` sequences: ``(first copy, repeated copy)``.

    The first number is over the predictions of tokens 2 .. period of the first copy (they cannot be
    known: about ``log(vocab_size - 1)``); the second over tokens 2 .. period of the second copy, which
    can be copied.
    """
    log_probs = F.log_softmax(model(tokens).float(), dim=-1)
    loss = -log_probs[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]  # (B, T - 1): predicting token t + 1
    return loss[:, 1:period].mean().item(), loss[:, period + 1 : 2 * period].mean().item()


# -------------------------------------------------------------------------------------------- training
@dataclass
class TrainingLog:
    """One row per logged step: the step, the training loss on copyable and on other positions, seconds."""

    steps: list[int]
    copy_loss: list[float]
    other_loss: list[float]
    seconds: list[float]


def train_induction(
    model: Decoder,
    steps: int,
    *,
    batch_size: int = 32,
    lr: float = 5e-3,
    weight_decay: float = INDUCTION_WEIGHT_DECAY,
    periods: tuple[int, int] = (6, 20),
    seed: int = 0,
    log_every: int = 25,
    on_log: Callable[[int, float, float], None] | None = None,
    threads: int | None = 1,
) -> TrainingLog:
    """Train ``model`` with AdamW on :func:`training_batch` data; deterministic for a given ``seed``.

    ``weight_decay`` is AdamW's decoupled decay, on every parameter; the default (0.5, strong) is the
    one the shipped weights were trained with (see :data:`INDUCTION_WEIGHT_DECAY`). ``threads`` sets
    ``torch.set_num_threads`` for the run (restored after): one thread gives the same numbers on every
    run. Returns the log.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    length = min(model.config.max_seq_len, 1 + 2 * periods[1] + 4)
    log = TrainingLog([], [], [], [])
    start = time.perf_counter()
    model.train()
    try:
        for step in range(1, steps + 1):
            tokens, copyable = training_batch(batch_size, length, model.config.vocab_size, periods, generator)
            logits = model(tokens[:, :-1])
            loss = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")  # (B, T - 1)
            optimizer.zero_grad()
            loss.mean().backward()
            optimizer.step()
            if step % log_every == 0 or step == steps:
                copy, other = loss[copyable].mean().item(), loss[~copyable].mean().item()
                log.steps.append(step)
                log.copy_loss.append(copy)
                log.other_loss.append(other)
                log.seconds.append(time.perf_counter() - start)
                if on_log is not None:
                    on_log(step, copy, other)
    finally:
        model.eval()
        torch.set_num_threads(old_threads)
    return log


def load_induction_model(path: Path | str = WEIGHTS) -> Decoder:
    """The decoder trained by ``scripts/train_induction.py``, from its safetensors file."""
    from safetensors.torch import load_file

    model = Decoder(INDUCTION_CONFIG)
    model.load_state_dict(load_file(str(path)))
    return model.eval()


# ----------------------------------------------------------------------- a pretrained encoder (lesson 12)
def referent_margins(attentions: Tensor, pronoun: Tensor, referent: Tensor, other: Tensor) -> Tensor:
    """How much more weight each head sends from the pronoun to its referent than to the other noun.

    Args:
        attentions: ``(layers, B, H, L, L)``, one sentence per batch row.
        pronoun, referent, other: int ``(B,)`` token positions in each sentence.

    Returns:
        ``(layers, H, B)``: ``weight(pronoun -> referent) - weight(pronoun -> other)``; > 0 means right.
    """
    require_rank("attentions", require_float("attentions", attentions), 5, "(layers, B, H, L, L)")
    rows = torch.arange(attentions.shape[1])
    from_pronoun = attentions.transpose(0, 1)[rows, :, :, pronoun]  # (B, layers, H, L): the pronoun's rows
    margin = from_pronoun[rows, :, :, referent] - from_pronoun[rows, :, :, other]  # (B, layers, H)
    return margin.permute(1, 2, 0)


def sink_share(attentions: Tensor, key_mask: Tensor, position: int = 0) -> Tensor:
    """Mean weight each head puts on the token at ``position`` (``[CLS]`` for 0), over every real query
    of every sentence: ``(layers, B, H, L, L)`` and bool ``(B, L)`` -> ``(layers, H)``."""
    require_rank("attentions", require_float("attentions", attentions), 5, "(layers, B, H, L, L)")
    real = key_mask[None, :, None, :].to(attentions.dtype)  # (1, B, 1, L): real queries
    on_sink = attentions[..., position]  # (layers, B, H, L)
    return (on_sink * real).sum(dim=(1, 3)) / (real.sum(dim=(1, 3)) * 1.0)


def encoder_head_ablation(layers: Sequence[object], heads: Sequence[tuple[int, int]]) -> Callable[..., object]:
    """A ``self_attention`` plug-in for :func:`attention_course.pretrained.encode` that zeroes the
    outputs of the ``(layer, head)`` pairs before ``W_O``; ``layers`` is ``encoder.weights.layers``."""
    from .attention import masked_attention
    from .pretrained import EncoderLayerWeights, encoder_self_attention

    def self_attention(
        hidden: Tensor, layer: EncoderLayerWeights, key_mask: Tensor, n_heads: int
    ) -> tuple[Tensor, Tensor]:
        index = next(i for i, candidate in enumerate(layers) if candidate is layer)
        off = [head for at, head in heads if at == index]
        for head in off:
            if not 0 <= head < n_heads:
                raise IndexError(f"head {head} is not in a layer of {n_heads} heads")

        def attention_fn(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
            out, weights = masked_attention(q, k, v, mask)
            if off:
                out = out.clone()
                out[:, off] = 0.0
            return out, weights

        return encoder_self_attention(hidden, layer, key_mask, n_heads, attention_fn=attention_fn)

    for layer, _ in heads:
        if not 0 <= layer < len(layers):
            raise IndexError(f"layer {layer} is not in an encoder of {len(layers)} layers")
    return self_attention
