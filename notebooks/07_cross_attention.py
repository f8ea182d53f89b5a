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
# # 07 · Cross-attention
#
# **You will be able to**
# 1. say where the queries, keys and values of cross-attention come from, and the shape of its
#    weights;
# 2. explain why cross-attention has no causal mask, and which mask it does need;
# 3. place it in an encoder–decoder block, and compute the encoder's keys and values once for a
#    whole decoding;
# 4. train a tiny encoder–decoder to reverse digits in seconds and read the alignment it learned.
#
# **Builds on:** [lesson 05](05_masking.ipynb) (causal and padding masks) and
# [lesson 06](06_multi_head_attention.ipynb) (multi-head attention, $W_O$).

# %%
import time

import matplotlib.pyplot as plt
import torch
from torch import nn

from attention_course import multi_head_attention
from attention_course.cross_attention import (
    attend_memory,
    cross_attention,
    cross_attention_alignment,
    encode_memory,
    make_batch,
    toy_accuracy,
    train_toy,
)
from attention_course.teaching.plotting import plot_attention
from attention_course.teaching.widgets import alignment_stepper, save_figure

_ = torch.manual_seed(0)  # every random number below is the same on every run

# %% [markdown]
# ## 1. Two sequences, one lookup
#
# A translator reads the whole source sentence first, then writes the translation one word at a
# time. Writing "noir" in "le chat noir", it looks back at "black" in "the black cat". In a
# transformer, the **encoder** reads the source and the **decoder** writes the output; the
# decoder's look back at the source is **cross-attention**:
#
# - the **queries** come from the decoder ("what do I need to write next?"),
# - the **keys and values** come from the encoder ("here is what the source says").
#
# Self-attention (lessons 02–06) is the special case where both come from the same sequence. With
# $T$ decoder positions and $S$ encoder positions, the weights are a $T \times S$ matrix, not a
# square one: one row per decoder position, one column per source token.

# %%
d_model, n_heads = 8, 2
decoder_states = torch.randn(1, 3, d_model)  # (B, T, d_model): "le chat noir"
encoder_states = torch.randn(1, 4, d_model)  # (B, S, d_model): "the black cat ."
w_q, w_k, w_v, w_o = (torch.randn(d_model, d_model) / d_model**0.5 for _ in range(4))
output, weights = cross_attention(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads)
print("output :", tuple(output.shape), " (B, T, d_model): one row per decoder position")
print("weights:", tuple(weights.shape), " (B, n_heads, T, S)")
print("each row sums to 1:", torch.allclose(weights.sum(-1), torch.ones(1, n_heads, 3)))

# %% [markdown]
# ## 2. The equations, and where it sits
#
# With decoder states $Y$ (`(T, d_model)`) and encoder states $X$ (`(S, d_model)`), per head $i$:
#
# $$Q_i = Y W_Q^{(i)}, \qquad K_i = X W_K^{(i)}, \qquad V_i = X W_V^{(i)}, \qquad
# \mathrm{head}_i = \mathrm{softmax}\!\left(\frac{Q_i K_i^\top}{\sqrt{d_\text{head}}}\right) V_i$$
#
# $$\mathrm{CrossAttn}(Y, X) = \mathrm{Concat}(\mathrm{head}_1, \dots, \mathrm{head}_h)\, W_O$$
#
# It is lesson 06's multi-head attention with `query = Y` and `key = value = X`:

# %%
expected, expected_weights = multi_head_attention(decoder_states, encoder_states, encoder_states,
                                                  w_q, w_k, w_v, w_o, n_heads)
print("same as multi_head_attention(Y, X, X):", torch.allclose(output, expected, atol=1e-6))

# %% [markdown]
# PyTorch's `nn.MultiheadAttention` does the same when called as `mha(query=Y, key=X, value=X)`:

# %%
torch_mha = nn.MultiheadAttention(d_model, n_heads, bias=False, batch_first=True)
with torch.no_grad():
    theirs, _ = torch_mha(decoder_states, encoder_states, encoder_states)
t_q, t_k, t_v = (w.T for w in torch_mha.in_proj_weight.detach().chunk(3))  # nn.Linear layout -> equations
mine, _ = cross_attention(decoder_states, encoder_states, t_q, t_k, t_v, torch_mha.out_proj.weight.detach().T,
                          n_heads)
print("matches nn.MultiheadAttention within 1e-6:", torch.allclose(mine, theirs, atol=1e-6))

# %% [markdown]
# In the original transformer, every decoder layer has three sub-layers, each with a residual
# connection and a layer norm (written here in the pre-norm order of modern models):
#
# ```
# y = y + CausalSelfAttention(norm(y))          # the decoder reads its own past
# y = y + CrossAttention(norm(y), encoder_out)   # ... then the whole source
# y = y + FeedForward(norm(y))                   # ... then thinks about it, position by position
# ```
#
# The encoder's output `encoder_out` is the same for every decoder layer and every decoding step.

# %% [markdown]
# ## 3. No causal mask across
#
# The causal mask of lesson 05 stops a decoder position from reading *later decoder positions*,
# which have not been written yet. The encoder's positions are different: the source is known in
# full before decoding starts, so every decoder position may read all of it. Applying a causal mask
# to cross-attention would be a bug: decoder position 0 could only see source token 0.

# %%
_, masked_by_mistake = multi_head_attention(decoder_states, encoder_states, encoder_states,
                                            w_q, w_k, w_v, w_o, n_heads, causal=True)
print("decoder position 0, head 0, correct          :", [round(w, 2) for w in weights[0, 0, 0].tolist()])
print("decoder position 0, head 0, with causal mask :", [round(w, 2) for w in masked_by_mistake[0, 0, 0].tolist()])

# %% [markdown]
# The mask cross-attention does need is a **padding mask on the source**: in a batch, short source
# sentences are padded, and no decoder position may read the padding. `encoder_mask` is `True` at
# real source tokens (lesson 05's convention):

# %%
encoder_mask = torch.tensor([[True, True, True, False]])  # (B, S): the last source position is padding
_, padded_weights = cross_attention(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask)
print("weight on the padded position, every head and decoder position:",
      padded_weights[..., 3].flatten().tolist())

# %% [markdown]
# ## 4. The encoder's keys and values are computed once
#
# While the decoder writes, the source does not change, so neither do $K = X W_K$ and
# $V = X W_V$. Implementations compute them once (the encoder's *memory*) and, at each decoding
# step, project only the new query. `cross_attention` is exactly these two parts:
# `encode_memory` (once) and `attend_memory` (every step).

# %%
memory = encode_memory(encoder_states, w_k, w_v, n_heads)  # k, v: (B, n_heads, S, d_head), once
steps = [attend_memory(decoder_states[:, t : t + 1], memory, w_q, w_o)[0] for t in range(3)]  # one row each
print("three single steps == all three at once:", torch.allclose(torch.cat(steps, dim=1), output, atol=1e-6))

# %% [markdown]
# What it saves, in multiply-adds per layer for a source of $S$ tokens and an output of $T$
# tokens: recomputing $K$ and $V$ at every step costs $T \cdot 2 S d_\text{model}^2$; once costs
# $2 S d_\text{model}^2$.

# %%
source_length, output_length, width = 50, 50, 512
per_step = 2 * source_length * width**2
print(f"K and V at every step: {output_length * per_step / 1e6:,.0f} M multiply-adds; "
      f"once: {per_step / 1e6:,.0f} M ({output_length}× fewer)")

# %% [markdown]
# (The decoder's own *self*-attention keys and values can be cached too, but they grow by one row
# per step: that is the KV cache of lesson 09.)

# %% [markdown]
# ## 5. A toy task: reversing digits
#
# Time to see cross-attention *learn* something. The task: read six digits, write them in reverse
# order (`3 1 4 1 5 9` → `9 5 1 4 1 3`). The model, `ToySeq2Seq`, is as small as an
# encoder–decoder gets:
#
# - **encoder**: digit embedding + learned position embedding, one feed-forward block;
# - **decoder**: digit embedding + position embedding, causal self-attention, **cross-attention**
#   (one head) to the encoder, a feed-forward block, and a read-out to the 10 digits (plus a
#   start token `BOS`).
#
# It trains with teacher forcing (the decoder is fed `BOS` and the correct outputs so far) on fresh
# random sequences, 150 steps of Adam, from a fixed seed. Every 10 steps, `keep_snapshot` records
# what the model reads for one probe sentence (section 6 replays these snapshots).

# %%
probe = torch.tensor([[3, 1, 4, 1, 5, 9]])
snapshots: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # step -> (what it wrote, its alignment)


def keep_snapshot(step: int, model: torch.nn.Module) -> None:
    """Called by train_toy before training and after every step: keep the probe's alignment every 10 steps."""
    if step % 10 == 0:
        snapshots[step] = cross_attention_alignment(model, probe)


# %%
# NBVAL_IGNORE_OUTPUT
start = time.perf_counter()
reverser, losses = train_toy("reverse", steps=150, seed=0, on_step=keep_snapshot)
print(f"trained in {time.perf_counter() - start:.1f} s; loss {losses[0]:.2f} -> {losses[-1]:.3f}")

# %%
figure, ax = plt.subplots(figsize=(6, 3))
ax.semilogy(losses)
ax.set_title("Training the reverser")
ax.set_xlabel("step")
ax.set_ylabel("cross-entropy loss (log scale)")
plt.show()

# %% [markdown]
# Decoding is greedy: encode the source once, then pick the most likely digit at each step. On 512
# sequences the model has never seen:

# %%
token_accuracy, sequence_accuracy = toy_accuracy(reverser, "reverse")
print(f"digits right: {100 * token_accuracy:.1f} %   whole sequences right: {100 * sequence_accuracy:.1f} %")

# %% [markdown]
# ## 6. Experiment: what does the decoder read?
#
# The cross-attention weights say, for each output step, which source positions it read. To write
# output $t$ of a reversal, the model must read source position $S - 1 - t$: the weights should
# form an **anti-diagonal**.

# %%
source = torch.tensor([[3, 1, 4, 1, 5, 9]])
written, alignment = cross_attention_alignment(reverser, source)  # (1, T), (1, T, S)
print("source :", source[0].tolist())
print("written:", written[0].tolist())
plot_attention(alignment[0], [f"out {t}: {d}" for t, d in enumerate(written[0].tolist())],
               [f"in {s}: {d}" for s, d in enumerate(source[0].tolist())],
               title="Cross-attention of the reverser")
plt.show()

# %%
sources, _ = make_batch("reverse", 256, 6, torch.Generator().manual_seed(1))
_, alignments = cross_attention_alignment(reverser, sources)
mirrored = alignments.argmax(-1) == torch.arange(5, -1, -1)  # (256, T): read the mirrored position?
print(f"output steps whose strongest weight is on the mirrored source position: {100 * mirrored.float().mean():.1f} %")

# %% [markdown]
# ### Watch the alignment form
#
# The snapshots kept during training show *when* the anti-diagonal appears. Slide through them
# (nothing is retrained: each position of the slider is a saved snapshot):

# %%
snapshot_steps = sorted(snapshots)
probe_mirrored = {step: (snapshots[step][1][0].argmax(-1) == torch.arange(5, -1, -1)).float().mean().item()
                  for step in snapshot_steps}
print("share of output steps reading the mirrored digit, by training step:")
print("  ".join(f"{step}: {share:.0%}" for step, share in probe_mirrored.items()))

# %%
# NBVAL_IGNORE_OUTPUT
stepper = alignment_stepper(snapshot_steps, torch.stack([snapshots[s][1][0] for s in snapshot_steps]),
                            torch.stack([snapshots[s][0][0] for s in snapshot_steps]), probe[0].tolist(), losses)
save_figure(stepper, "figures/07_alignment_over_training.png", **{"training step": 20})
stepper

# %% [markdown]
# ![The reverser's cross-attention for 3 1 4 1 5 9 after 20 training steps, beside the loss curve](figures/07_alignment_over_training.png)
#
# *The widget at step 20 (a saved picture, for readers without a running kernel): the
# anti-diagonal is half drawn.* The numbers above say the same: at step 0 the weights are spread
# and no output step reads its mirrored digit; the alignment forms in the first few dozen steps,
# while the loss is still falling steeply, and it is complete long before the loss flattens.

# %% [markdown]
# Reversing is a question about **positions**: output $t$ reads source position $S - 1 - t$
# whatever the digits are. Sorting is a question about **content**: where the next-smallest digit
# sits changes from one input to the next. The same model trained to sort (harder, so 300 steps):

# %%
# NBVAL_IGNORE_OUTPUT
start = time.perf_counter()
sorter, _ = train_toy("sort", steps=300, seed=0)
print(f"trained in {time.perf_counter() - start:.1f} s")

# %%
token_accuracy, sequence_accuracy = toy_accuracy(sorter, "sort")
print(f"digits right: {100 * token_accuracy:.1f} %   whole sequences right: {100 * sequence_accuracy:.1f} %")

# %%
source = torch.tensor([[7, 2, 8, 0, 5, 3]])  # distinct digits, so every output comes from one source position
written, alignment = cross_attention_alignment(sorter, source)
plot_attention(alignment[0], [f"out {t}: {d}" for t, d in enumerate(written[0].tolist())],
               [f"in {s}: {d}" for s, d in enumerate(source[0].tolist())],
               title="Cross-attention of the sorter")
plt.show()
print("largest weight of each output step:", [round(w, 2) for w in alignment[0].max(-1).values.tolist()])

# %% [markdown]
# The sorter writes the right digits, but its alignment is not a permutation. The first step
# reads the smallest digit sharply and the last one the largest, while the steps in between
# spread their weight over several source digits. An attention head is not obliged to point at
# one token: here it hands the decoder a *mixture* of the digits, and the rest of the decoder
# (its self-attention over what it already wrote, and the feed-forward block) works out which one
# comes next. Clean alignments like the reverser's are easy to read; they are not guaranteed.

# %% [markdown]
# ## Your turn
#
# Open [the exercise notebook](../exercises/07_cross_attention.ipynb) and write `cross_attention`.
# The check cell recognises a causal mask applied by mistake, queries taken from the encoder, a
# forgotten $W_O$, a scale by $\sqrt{d_\text{model}}$ and a padding mask that is ignored or
# inverted.
#
# Before that, try here: train the reverser with `steps=40` and look at its alignment; train a
# `"copy"` model and predict its picture first. Then try `length=8` or `n_heads=2` (`train_toy`
# takes both) and see whether the heads share the work.

# %% [markdown]
# ## Summary
#
# - Cross-attention: queries from the decoder, keys and values from the encoder; weights are
#   $T \times S$, one row per decoder position, and the output has the decoder's length.
# - No causal mask across: the whole source is known. Only the source's padding is masked.
# - The encoder's keys and values are computed once per source and reused at every decoding step.
# - A tiny encoder–decoder learns to reverse digits in a few seconds, and its cross-attention is
#   the anti-diagonal: the alignment is readable straight from the weights.
#
# **Next:** [lesson 08](08_positional_encodings.ipynb). Our toy model knew where each digit was
# because we added *position embeddings*. Without them, attention cannot tell `3 1 4` from
# `4 1 3` — lesson 08 shows why, and the ways models put order back.
