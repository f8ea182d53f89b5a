"""Lesson 14 (what heads learn): the induction score of a head, and a layer with one head ablated."""

from __future__ import annotations

import torch

from ...heads import ablated_attention, induction_score
from ..edits import catalogue, edit
from ..registry import register
from ..spec import Case, Exercise

LESSON = "14_what_heads_learn"


def _causal_weights(batch: int, heads: int, length: int, gen: torch.Generator, sharpness: float = 2.0) -> torch.Tensor:
    """Random causal attention weights ``(batch, heads, length, length)``: rows sum to 1, zero above the diagonal."""
    scores = sharpness * torch.randn(batch, heads, length, length, generator=gen)
    future = torch.ones(length, length, dtype=torch.bool).triu(1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)


def _repeat(
    segment: torch.Tensor,
    *,
    bos: bool = True,
    cut: int = 0,
    pad: int = 0,
    noise_before: int = 0,
    noise_after: int = 0,
    gen: torch.Generator,
) -> torch.Tensor:
    """One sequence: [BOS], noise, segment, segment (its last ``cut`` tokens replaced by ``pad`` zeros), noise."""
    parts = [torch.zeros(1, dtype=torch.long)] if bos else []
    parts.append(torch.randint(1, 40, (noise_before,), generator=gen))
    parts += [segment, segment[: len(segment) - cut], torch.zeros(cut + pad, dtype=torch.long)]
    parts.append(torch.randint(1, 40, (noise_after,), generator=gen))
    return torch.cat(parts)


def induction_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(14)

    def segment(n: int) -> torch.Tensor:
        return torch.randperm(39, generator=gen)[:n] + 1  # n distinct tokens 1 .. 39

    one = _repeat(segment(4), gen=gen)[None]  # (1, 9)
    padded = torch.stack(
        [_repeat(segment(5), gen=gen), _repeat(segment(5), cut=3, gen=gen), _repeat(segment(5), cut=1, gen=gen)]
    )  # (3, 11): two repeats cut short, then padding
    shifted = torch.stack([_repeat(segment(3), bos=False, noise_before=2, noise_after=3, gen=gen) for _ in range(2)])
    long = _repeat(segment(12), gen=gen)[None].repeat(2, 1)  # (2, 25)
    return [
        Case((_causal_weights(1, 2, 9, gen), one, 4), label="[BOS] + 4 tokens + the same 4, batch 1, 2 heads"),
        Case(
            (_causal_weights(3, 3, 11, gen), padded, 5),
            label="batch of 3 with period 5, two of them cut short and padded with 0 at the end",
        ),
        Case(
            (_causal_weights(2, 2, 11, gen, sharpness=30.0), shifted, 3),
            label="no [BOS], 2 random tokens, then 3 tokens repeated, then 3 random tokens; near one-hot weights",
        ),
        Case((_causal_weights(2, 4, 25, gen), long, 12), label="[BOS] + 12 tokens + the same 12, batch 2, 4 heads"),
        Case(  # the instructions ask for a ValueError when no position repeats
            (torch.full((2, 1, 6, 6), 1 / 6), torch.tensor([[0, 1, 2, 3, 4, 5], [0, 5, 4, 3, 2, 1]]), 2),
            label="no token repeats 2 positions back (a ValueError)",
        ),
    ]


register(
    Exercise(
        name="induction_score",
        lesson=LESSON,
        reference=induction_score,
        cases=induction_cases,
        mistakes=catalogue(
            LESSON,
            "induction_score",
            (
                "offset_by_one",
                "an induction head looks at the token AFTER the earlier copy of the current token: key "
                "q - period + 1 (torch.diagonal(attention, offset=-(period - 1), ...)), not the earlier copy "
                "itself at q - period.",
                edit(
                    "torch.diagonal(attention, offset=-(period - 1), dim1=-2, dim2=-1)[..., 1:]",
                    "torch.diagonal(attention, offset=-period, dim1=-2, dim2=-1)",
                ),
            ),
            (
                "scored_on_the_first_copy",
                "score only the queries in the repeated copy: in the first copy (and at [BOS]) there is nothing "
                "to copy yet. Keep the positions q whose token equals the token `period` positions earlier.",
                # every query that has a key period - 1 back, the first (unrepeated) copy and [BOS]'s neighbours included
                edit(
                    "return (on_target * chosen).sum(dim=(0, -1)) / chosen.sum()",
                    "return torch.diagonal(attention, offset=-(period - 1), dim1=-2, dim2=-1).mean(dim=(0, -1))",
                ),
            ),
            (
                "averaged_over_padding",
                "not every position after the first copy is a repeat: padding, tokens after the repeat and the "
                "last token of the first copy are not. Average only over the positions q where "
                "tokens[:, q] == tokens[:, q - period].",
                # every query from position `period` on, as if all of them were repeats: padding and noise included
                edit(
                    "return (on_target * chosen).sum(dim=(0, -1)) / chosen.sum()", "return on_target.mean(dim=(0, -1))"
                ),
            ),
            (
                "repeat_mask_misaligned",
                "the diagonal at offset -(period - 1) starts at query period - 1, the repeat test at query period: "
                "drop the diagonal's first entry ([..., 1:]) so that entry q of both is the same query.",
                # entry q of the diagonal is query q - 1 of the repeat test
                edit(
                    "on_target = torch.diagonal(attention, offset=-(period - 1), dim1=-2, dim2=-1)[..., 1:]",
                    "on_target = torch.diagonal(attention, offset=-(period - 1), dim1=-2, dim2=-1)[..., :-1]",
                ),
            ),
            (
                "summed_not_averaged",
                "the score is a mean: divide the summed weights by the number of repeated positions of the whole "
                "batch (a perfect induction head scores 1).",
                edit(
                    "return (on_target * chosen).sum(dim=(0, -1)) / chosen.sum()",
                    "return (on_target * chosen).sum(dim=(0, -1))",
                ),
            ),
            (
                "mean_of_sequence_means",
                "average over the repeated positions of the whole batch at once (1/|R| times the sum over R), not "
                "each sequence's mean and then the mean of those: a sequence whose repeat was cut short weighs less.",
                edit(
                    "return (on_target * chosen).sum(dim=(0, -1)) / chosen.sum()",
                    "return ((on_target * chosen).sum(dim=-1) / chosen.sum(dim=-1).clamp_min(1)).mean(dim=0)",
                ),
            ),
        ),
    )
)


def ablation_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(140)

    def case(
        label: str, batch: int, heads: int, length: int, d_head: int, d_model: int, head: int, scale: float = 1.0
    ) -> Case:
        q, k, v = (torch.randn(batch, heads, length, d_head, generator=gen) for _ in range(3))
        o_weight = torch.randn(d_model, heads * d_head, generator=gen) / (heads * d_head) ** 0.5
        return Case((scale * q, k, v, o_weight, head), label=label)

    return [
        case("batch 1, 2 heads, 5 tokens, head 0 off", batch=1, heads=2, length=5, d_head=4, d_model=8, head=0),
        case(
            "batch 2, 4 heads, 7 tokens, head 2 off, d_model 12 != 4 * d_head",
            batch=2,
            heads=4,
            length=7,
            d_head=4,
            d_model=12,
            head=2,
        ),
        case(
            "batch 3, 3 heads, 6 tokens, the last head off, large scores",
            batch=3,
            heads=3,
            length=6,
            d_head=8,
            d_model=24,
            head=2,
            scale=8.0,
        ),
        case("one token only, 2 heads, head 1 off", batch=2, heads=2, length=1, d_head=4, d_model=8, head=1),
    ]


register(
    Exercise(
        name="ablated_attention",
        lesson=LESSON,
        reference=ablated_attention,
        cases=ablation_cases,
        mistakes=catalogue(
            LESSON,
            "ablated_attention",
            (
                "zeroed_scores_not_output",
                "zeroing a head's scores (or its query/key weights) does not switch it off: the softmax of zeros is "
                "a uniform average over the earlier tokens. Zero the head's OUTPUT, heads[:, head] = 0, "
                "after the weighted sum of values.",
                # the head's weights "switched off": its attention becomes uniform, not zero
                edit(
                    """
                heads = scaled_dot_product_attention(q, k, v, causal_mask(q.shape[-2]))
                heads = heads.clone()
                heads[:, head] = 0.0
                """,
                    """
                scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
                scores[:, head] = 0.0
                weights = scores.masked_fill(~causal_mask(q.shape[-2]), float("-inf")).softmax(dim=-1)
                heads = weights @ v
                """,
                ),
            ),
            (
                "zeroed_after_projection",
                "zero the head's output BEFORE the output projection: after W_O every feature mixes all heads, "
                "so features head * d_head .. (head + 1) * d_head are not that head.",
                # W_O has already mixed every head into every feature
                edit("heads[:, head] = 0.0", "d_head = q.shape[-1]"),
                edit(
                    "return merge_heads(heads) @ o_weight.T",
                    """
                out = merge_heads(heads) @ o_weight.T
                out[..., head * d_head : (head + 1) * d_head] = 0.0
                return out
                """,
                ),
            ),
            (
                "ablated_the_whole_layer",
                "switch off only the chosen head: the other heads' outputs still go through W_O "
                "(the result is zero only when every head is off).",
                edit("heads[:, head] = 0.0", "heads[:] = 0.0"),  # every head of the layer off
            ),
            (
                "not_causal",
                "the layer is causal: query i attends to keys 0..i only (pass causal_mask(T) to the attention).",
                edit(
                    "heads = scaled_dot_product_attention(q, k, v, causal_mask(q.shape[-2]))",
                    "heads = scaled_dot_product_attention(q, k, v)",
                ),
            ),
            (
                "heads_merged_without_transpose",
                "(B, H, T, d_head) becomes (B, T, H * d_head) by moving the head axis next to d_head first "
                "(merge_heads, or transpose(1, 2) then reshape); a plain reshape mixes tokens and heads.",
                edit(
                    "return merge_heads(heads) @ o_weight.T",
                    "return heads.reshape(heads.shape[0], heads.shape[2], -1) @ o_weight.T",
                ),
            ),
            (
                "scores_not_scaled",
                "scale each head's scores by 1 / sqrt(d_head) before the softmax, as in every attention layer.",
                edit(
                    "heads = scaled_dot_product_attention(q, k, v, causal_mask(q.shape[-2]))",
                    "heads = scaled_dot_product_attention(q, k, v, causal_mask(q.shape[-2]), scale=1.0)",
                ),
            ),
        ),
    )
)
