# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercise 14 · What heads learn
#
# Lesson: [14 What heads learn](../notebooks/14_what_heads_learn.ipynb). Two functions, each followed
# by a check cell that says **PASS**, **TODO** (not done yet) or **FAIL** with a hint.

# %%
import torch

from attention_course import causal_mask, scaled_dot_product_attention
from attention_course.grading import check
from attention_course.multihead import merge_heads

_ = torch.manual_seed(0)  # the same random numbers on every run

# %% [markdown]
# ## 1. The induction score of a head
#
# The sequences repeat a segment: the token at position $q$ equals the token at $q - \text{period}$
# for every $q$ in the repeated copy. There, an induction head attends to key
# $q - \text{period} + 1$, the token **after** the earlier copy of the current token.
#
# Write `induction_score(attention, tokens, period)`: for each head, the mean weight on key
# $q - \text{period} + 1$, averaged over the batch and over the repeated queries only, the positions
# $q \ge \text{period}$ with `tokens[b, q] == tokens[b, q - period]`. Not the first copy, not `[BOS]`,
# not the padding at the end of a sequence whose repeat was cut short.
#
# $$\text{score}_h = \frac{1}{|R|} \sum_{(b, q) \in R} A_{b,h}[q,\; q - \text{period} + 1], \qquad
#   R = \{(b, q) : q \ge \text{period},\ x_{b,q} = x_{b,q-\text{period}}\}$$
#
# `torch.diagonal(attention, offset=-(period - 1), dim1=-2, dim2=-1)` holds, for the queries
# $q = \text{period} - 1, \dots, T - 1$, the weight on key $q - \text{period} + 1$.
# Raise a `ValueError` when no position repeats (there is nothing to score).

# %%
def induction_score(attention: torch.Tensor, tokens: torch.Tensor, period: int) -> torch.Tensor:
    """Mean weight of each head on the token after the earlier copy, over the repeated positions.

    Args:
        attention: one layer's weights (B, H, T, T).
        tokens: the token ids (B, T).
        period: the distance between the two copies.

    Returns:
        (H,).
    """
    ### BEGIN SOLUTION
    repeats = torch.zeros_like(tokens, dtype=torch.bool)
    repeats[:, period:] = tokens[:, period:] == tokens[:, :-period]  # (B, T): positions in the repeat
    if not repeats.any():
        raise ValueError(f"no token equals the token {period} positions before it: nothing to score")
    on_target = torch.diagonal(attention, offset=-(period - 1), dim1=-2, dim2=-1)[..., 1:]  # (B, H, T - period)
    chosen = repeats[:, None, period:].to(attention.dtype)  # (B, 1, T - period)
    return (on_target * chosen).sum(dim=(0, -1)) / chosen.sum()
    ### END SOLUTION


# %%
check("induction_score", induction_score)

# %% [markdown]
# ## 2. A layer with one head switched off
#
# Ablating head $h$ means: compute the layer as usual, but replace that head's output (its weighted
# sum of values) by zeros **before** the output projection, so the other heads are untouched:
#
# $$\mathrm{out} = [\mathrm{head}_0, \dots, \underbrace{0}_{h}, \dots, \mathrm{head}_{H-1}]\, W_O^\top
#   \qquad (W_O \text{ in } \texttt{nn.Linear} \text{ layout, } (d_\text{model}, H\, d_\text{head}))$$
#
# Write `ablated_attention(q, k, v, o_weight, head)`: causal attention per head (the queries and keys
# are already rotated), zero head `head`'s output, merge the heads (`merge_heads`) and project.
# Do not change the inputs in place.

# %%
def ablated_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o_weight: torch.Tensor,
                      head: int) -> torch.Tensor:
    """Causal multi-head attention with head `head`'s output zeroed before the output projection.

    Args:
        q, k, v: (B, H, T, d_head).
        o_weight: (d_model, H * d_head), the output projection's weight.
        head: the head to switch off.

    Returns:
        (B, T, d_model).
    """
    ### BEGIN SOLUTION
    heads = scaled_dot_product_attention(q, k, v, causal_mask(q.shape[-2]))  # (B, H, T, d_head)
    heads = heads.clone()
    heads[:, head] = 0.0  # this head says nothing; the others are untouched
    return merge_heads(heads) @ o_weight.T  # (B, T, d_model)
    ### END SOLUTION


# %%
check("ablated_attention", ablated_attention)

# %% [markdown]
# Passed? Try both on the trained model of the lesson: `attention_course.heads.load_induction_model()`,
# `attention_course.heads.attention_weights(model, tokens)` for the weights of every layer, and
# `attention_course.heads.repeated_sequences(...)` for held-out sequences. Which head scores highest?
# Does zeroing `o_weight`'s columns of a head give the same result as your function, and why?
#
# Next: back to [lesson 12](../notebooks/12_capstone.ipynb), where the same tools test the heads of a
# real encoder.
