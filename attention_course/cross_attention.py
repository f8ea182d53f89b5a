r"""Cross-attention and a tiny encoder–decoder that learns to copy, reverse or sort digits (lesson 07).

In cross-attention the **decoder** asks and the **encoder** answers:

$$\mathrm{CrossAttn}(Y, X) = \mathrm{MHA}(\text{queries} = Y W_Q,\ \text{keys} = X W_K,\ \text{values} = X W_V)\, W_O$$

with $Y$ the decoder states ``(B, T, d_model)`` and $X$ the encoder states ``(B, S, d_model)``.
There is no causal mask: every decoder position may read the whole source. Only a padding mask on
the encoder side hides padding tokens. Because $X$ does not change while the decoder writes, its
keys and values (the *memory*) are computed once and reused at every decoding step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validation import require_float, require_rank, require_tensor, shape_of
from .attention import scaled_dot_product_attention
from .masking import key_mask_to_attention_mask
from .multihead import MultiHeadAttention, merge_heads, split_heads

TASKS = ("copy", "reverse", "sort")
BOS = 10  # the decoder's start token; digits are 0..9
VOCAB_SIZE = 11


def _require_square(name: str, w: Tensor, d_model: int) -> None:
    require_float(name, w)
    if tuple(w.shape) != (d_model, d_model):
        raise ValueError(f"{name} must be (d_model, d_model) = {(d_model, d_model)}, got {shape_of(w)}")


def encode_memory(encoder_states: Tensor, w_k: Tensor, w_v: Tensor, n_heads: int) -> tuple[Tensor, Tensor]:
    """The encoder's keys and values, split into heads: computed once per source sentence.

    Args:
        encoder_states: ``(B, S, d_model)``.
        w_k, w_v: ``(d_model, d_model)`` each (``k = x @ w_k``).
        n_heads: number of heads; divides ``d_model``.

    Returns:
        ``k, v``: ``(B, n_heads, S, d_head)`` each.
    """
    require_rank("encoder_states", require_float("encoder_states", encoder_states), 3, "(B, S, d_model)")
    d_model = encoder_states.shape[-1]
    _require_square("w_k", w_k, d_model)
    _require_square("w_v", w_v, d_model)
    return split_heads(encoder_states @ w_k, n_heads), split_heads(encoder_states @ w_v, n_heads)


def attend_memory(
    decoder_states: Tensor,
    memory: tuple[Tensor, Tensor],
    w_q: Tensor,
    w_o: Tensor,
    encoder_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Decoder queries read a precomputed encoder memory (no causal mask).

    Args:
        decoder_states: ``(B, T, d_model)``.
        memory: ``k, v`` from :func:`encode_memory`, ``(B, n_heads, S, d_head)`` each.
        w_q, w_o: ``(d_model, d_model)`` each.
        encoder_mask: optional bool ``(B, S)``, ``True`` at real source tokens.

    Returns:
        ``output (B, T, d_model)`` and ``weights (B, n_heads, T, S)``.
    """
    require_rank("decoder_states", require_float("decoder_states", decoder_states), 3, "(B, T, d_model)")
    k, v = memory
    require_rank("memory keys", require_float("memory keys", k), 4, "(B, n_heads, S, d_head)")
    d_model = decoder_states.shape[-1]
    _require_square("w_q", w_q, d_model)
    _require_square("w_o", w_o, d_model)
    n_heads, n_keys = k.shape[1], k.shape[2]
    if n_heads * k.shape[-1] != d_model:
        raise ValueError(f"memory keys {shape_of(k)} do not split d_model={d_model} of decoder_states into heads")
    mask = None
    if encoder_mask is not None:
        require_tensor("encoder_mask", encoder_mask)
        if encoder_mask.dtype != torch.bool or tuple(encoder_mask.shape) != (k.shape[0], n_keys):
            raise ValueError(
                f"encoder_mask must be bool (B, S) = {(k.shape[0], n_keys)}, got {encoder_mask.dtype} {shape_of(encoder_mask)}"
            )
        mask = key_mask_to_attention_mask(encoder_mask)[:, None]  # (B, 1, 1, S): every head, every query
    q = split_heads(decoder_states @ w_q, n_heads)  # (B, H, T, d_head)
    heads, weights = scaled_dot_product_attention(q, k, v, mask, return_weights=True)  # no causal mask
    return merge_heads(heads) @ w_o, weights  # (B, T, d_model), (B, H, T, S)


def cross_attention(
    decoder_states: Tensor,
    encoder_states: Tensor,
    w_q: Tensor,
    w_k: Tensor,
    w_v: Tensor,
    w_o: Tensor,
    n_heads: int,
    encoder_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Multi-head cross-attention: queries from the decoder, keys and values from the encoder.

    Args:
        decoder_states: ``(B, T, d_model)``, the sequence being written.
        encoder_states: ``(B, S, d_model)``, the source it reads.
        w_q, w_k, w_v, w_o: ``(d_model, d_model)`` each, equation layout (``q = y @ w_q``).
        n_heads: number of heads; divides ``d_model``.
        encoder_mask: optional bool ``(B, S)``, ``True`` at real source tokens (``False`` at padding).

    Returns:
        ``output (B, T, d_model)`` and ``weights (B, n_heads, T, S)``; every weight row sums to 1.
    """
    require_rank("decoder_states", require_float("decoder_states", decoder_states), 3, "(B, T, d_model)")
    require_rank("encoder_states", require_float("encoder_states", encoder_states), 3, "(B, S, d_model)")
    if decoder_states.shape[0] != encoder_states.shape[0] or decoder_states.shape[2] != encoder_states.shape[2]:
        raise ValueError(
            "decoder_states and encoder_states must share batch size and d_model, "
            f"got {shape_of(decoder_states)} and {shape_of(encoder_states)}"
        )
    memory = encode_memory(encoder_states, w_k, w_v, n_heads)
    return attend_memory(decoder_states, memory, w_q, w_o, encoder_mask)


class CrossAttention(nn.Module):
    """Cross-attention with weights in equation layout; ``memory()`` once, ``forward()`` per step."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        scale = 1.0 / math.sqrt(d_model)
        self.w_q, self.w_k, self.w_v, self.w_o = (nn.Parameter(torch.randn(d_model, d_model) * scale) for _ in range(4))

    def memory(self, encoder_states: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, S, d_model) -> k, v (B, n_heads, S, d_head)``."""
        return encode_memory(encoder_states, self.w_k, self.w_v, self.n_heads)

    def forward(self, decoder_states: Tensor, memory: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """``(B, T, d_model)`` and a memory -> ``output (B, T, d_model)``, ``weights (B, n_heads, T, S)``."""
        return attend_memory(decoder_states, memory, self.w_q, self.w_o)


def _feed_forward(d_model: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))


class ToySeq2Seq(nn.Module):
    """A one-layer encoder–decoder over digit sequences (pre-norm residual blocks, learned positions).

    Encoder: token + position embedding, then a position-wise feed-forward block.
    Decoder: token + position embedding, causal self-attention, cross-attention to the encoder,
    feed-forward, and a linear read-out to the 11 tokens (digits 0..9 and ``BOS``).
    """

    def __init__(self, length: int, d_model: int = 32, n_heads: int = 1) -> None:
        super().__init__()
        self.length = length
        self.token = nn.Embedding(VOCAB_SIZE, d_model)
        self.enc_position = nn.Embedding(length, d_model)
        self.dec_position = nn.Embedding(length, d_model)
        self.enc_ff, self.dec_ff = _feed_forward(d_model), _feed_forward(d_model)
        self.self_attn = MultiHeadAttention(d_model, n_heads)
        self.cross_attn = CrossAttention(d_model, n_heads)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(5))
        self.readout = nn.Linear(d_model, VOCAB_SIZE)

    def encode(self, src: Tensor) -> Tensor:
        """``src (B, S)`` digits -> encoder states ``(B, S, d_model)``."""
        x = self.token(src) + self.enc_position(torch.arange(src.shape[1]))
        return x + self.enc_ff(self.norms[0](x))

    def decode(self, tgt_in: Tensor, memory: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """``tgt_in (B, T)`` (``BOS`` then the outputs so far) -> ``logits (B, T, 11)``, cross ``weights (B, H, T, S)``."""
        y = self.token(tgt_in) + self.dec_position(torch.arange(tgt_in.shape[1]))
        y = y + self.self_attn(self.norms[1](y), causal=True)[0]
        read, weights = self.cross_attn(self.norms[2](y), memory)
        y = y + read
        y = y + self.dec_ff(self.norms[3](y))
        return self.readout(self.norms[4](y)), weights

    def forward(self, src: Tensor, tgt_in: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher-forced pass: ``src (B, S)``, ``tgt_in (B, T)`` -> ``logits (B, T, 11)``, ``weights (B, H, T, S)``."""
        return self.decode(tgt_in, self.cross_attn.memory(self.encode(src)))


def make_batch(task: str, batch_size: int, length: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random digit sequences and their targets.

    Args:
        task: ``"copy"``, ``"reverse"`` or ``"sort"``.
        batch_size: B.
        length: L, digits per sequence.
        generator: the source of randomness (seeded by the caller).

    Returns:
        ``src (B, L)`` and ``tgt (B, L)``, int64 digits.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    src = torch.randint(0, 10, (batch_size, length), generator=generator)
    tgt = {"copy": src, "reverse": src.flip(-1), "sort": src.sort(dim=-1).values}[task]
    return src, tgt


def teacher_forcing_input(tgt: Tensor) -> Tensor:
    """``tgt (B, T) -> (B, T)``: ``BOS`` followed by all targets but the last."""
    return torch.cat([torch.full_like(tgt[:, :1], BOS), tgt[:, :-1]], dim=1)


def train_toy(
    task: str = "reverse",
    *,
    length: int = 6,
    d_model: int = 32,
    n_heads: int = 1,
    steps: int = 200,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    on_step: Callable[[int, ToySeq2Seq], None] | None = None,
) -> tuple[ToySeq2Seq, list[float]]:
    """Train a :class:`ToySeq2Seq` on ``task`` with Adam for a fixed number of steps.

    Args:
        task: ``"copy"``, ``"reverse"`` or ``"sort"``.
        length, d_model, n_heads: the model's size.
        steps, batch_size, lr: the training budget.
        seed: seeds the initial weights and the data.
        on_step: called as ``on_step(step, model)`` before training (step 0) and after each step
            (1 .. ``steps``), e.g. to save snapshots of the alignment; it must not train the model.

    Returns:
        the trained model (in eval mode) and the loss at every step.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = ToySeq2Seq(length, d_model, n_heads)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 32-wide matrices: more threads cost more in hand-offs than they save
    try:
        if on_step is not None:
            on_step(0, model)
        for step in range(1, steps + 1):
            src, tgt = make_batch(task, batch_size, length, generator)
            logits, _ = model(src, teacher_forcing_input(tgt))
            loss = F.cross_entropy(logits.reshape(-1, VOCAB_SIZE), tgt.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if on_step is not None:
                on_step(step, model)
    finally:
        torch.set_num_threads(threads)
    return model.eval(), losses


@torch.no_grad()
def greedy_decode(model: ToySeq2Seq, src: Tensor) -> tuple[Tensor, Tensor]:
    """Write the output one token at a time; the encoder memory is computed once, before the loop.

    Args:
        model: a trained :class:`ToySeq2Seq`.
        src: ``(B, S)`` digits.

    Returns:
        ``tokens (B, S)`` and the cross-attention ``weights (B, n_heads, S, S)`` of the last step
        (row ``t`` is what step ``t`` read).
    """
    memory = model.cross_attn.memory(model.encode(src))  # once per source, reused at every step
    tokens = torch.full_like(src[:, :1], BOS)
    for _ in range(src.shape[1]):
        logits, weights = model.decode(tokens, memory)
        tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return tokens[:, 1:], weights


def cross_attention_alignment(model: ToySeq2Seq, src: Tensor) -> tuple[Tensor, Tensor]:
    """The learned alignment: which source position each output step reads, averaged over heads.

    Args:
        model: a trained :class:`ToySeq2Seq`.
        src: ``(B, S)`` digits.

    Returns:
        ``tokens (B, S)`` (greedy outputs) and ``alignment (B, S_out, S_in)``, rows summing to 1.
    """
    tokens, weights = greedy_decode(model, src)
    return tokens, weights.mean(dim=1)


def toy_accuracy(model: ToySeq2Seq, task: str, n: int = 512, seed: int = 1234) -> tuple[float, float]:
    """Greedy-decoding accuracy on ``n`` fresh sequences: ``(per-token, whole-sequence)`` in [0, 1]."""
    src, tgt = make_batch(task, n, model.length, torch.Generator().manual_seed(seed))
    tokens, _ = greedy_decode(model, src)
    correct = tokens == tgt
    return correct.float().mean().item(), correct.all(dim=1).float().mean().item()
