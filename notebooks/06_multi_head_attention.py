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
# # 06 · Multi-head attention
#
# **You will be able to**
# 1. explain why a model runs several attention heads side by side instead of one wide head;
# 2. split a `(B, L, d_model)` tensor into heads with a reshape **and** a transpose, and recognise
#    the silent bug a reshape alone causes;
# 3. merge the heads back and mix them with the output projection $W_O$;
# 4. count the parameters (the same as one wide head) and load a `torch.nn.MultiheadAttention`
#    into the course's module with identical outputs.
#
# **Builds on:** [lesson 02](02_queries_keys_values.ipynb) (queries, keys, values),
# [lesson 03](03_scaling.ipynb) (the $\sqrt{d_k}$ scale) and [lesson 05](05_masking.ipynb) (masks).

# %%
import matplotlib.pyplot as plt
import torch
from torch import nn

from attention_course import (
    MultiHeadAttention,
    causal_mask,
    merge_heads,
    multi_head_attention,
    scaled_dot_product_attention,
    split_heads,
)
from attention_course.teaching.plotting import plot_attention
from attention_course.teaching.widgets import head_explorer, save_picture

_ = torch.manual_seed(0)  # every random number below is the same on every run

# %% [markdown]
# ## 1. One softmax can only look in one place
#
# Take "the cat sat on the mat". A word may want two different things at once: **the word just
# before it** (to know its neighbour) and **the verb** of the sentence (to know what happens).
# One attention head has one softmax per query, so its weights are one distribution: if it looks
# at both, it must share its attention between them and hand back a *blend* of two values.
#
# Let us build the two lookups by hand. Each token's embedding has 12 numbers: 6 describe the
# word (a constant 1, then determiner, noun, verb, preposition, unused) and 6 say its position.
#
# Why positions? Attention compares contents only: nothing in $\mathrm{softmax}(QK^\top)V$ knows
# where a token stands, so the two "the"s would be indistinguishable and "the word just before me"
# could not even be asked. So we write each token's position into its embedding by hand, as a
# one-hot vector in columns 6–11. This is the simplest kind of *position embedding*;
# [lesson 08](08_positional_encodings.ipynb) shows why attention needs one and how real models
# make theirs (sinusoids, learned tables, rotations). Section 1b below checks what goes wrong
# without it.

# %%
tokens = ["the", "cat", "sat", "on", "the", "mat"]
kind = {"the": 1, "cat": 2, "sat": 3, "on": 4, "mat": 2}  # column of the word's kind
x = torch.zeros(1, 6, 12)  # (B, L, d_model): columns 0-5 what the word is, 6-11 where it is
for position, word in enumerate(tokens):
    x[0, position, 0] = 1.0  # a constant feature every token has
    x[0, position, kind[word]] = 1.0
    x[0, position, 6 + position] = 1.0
print(x[0].int())

# %% [markdown]
# Head 0 owns query/key columns 0–5, head 1 owns columns 6–11. We write $W_Q$ and $W_K$ so that
#
# - **head 0** asks "who is at my position − 1?": token $i$'s query is $e_{i-1}$, token $j$'s key
#   is $e_j$ (read from the position columns);
# - **head 1** asks "where is the verb?": every query is $e_\text{verb}$, every key is the token's
#   word features.

# %%
strength = 12.0  # large scores make the softmax nearly one-hot, so the pictures are easy to read
w_q, w_k = torch.zeros(12, 12), torch.zeros(12, 12)  # (d_model, d_model), q = x @ w_q
for position in range(1, 6):
    w_q[6 + position, position - 1] = strength  # head 0: position i asks for position i - 1
for position in range(6):
    w_k[6 + position, position] = 1.0  # head 0: key = my position
w_q[0, 6 + kind["sat"]] = strength  # head 1: everyone asks for a verb
for feature in range(6):
    w_k[feature, 6 + feature] = 1.0  # head 1: key = my word features
w_v, w_o = torch.eye(12), torch.eye(12)  # values and output: hand the embeddings over unchanged

output, weights = multi_head_attention(x, x, x, w_q, w_k, w_v, w_o, n_heads=2)
print("weights:", tuple(weights.shape), " (B, n_heads, L, L)")

# %% [markdown]
# For comparison, a **single** head with the same $W_Q$ and $W_K$ (now one 12-wide head) adds
# the two scores and has to share one softmax between them.

# %%
_, single_head = multi_head_attention(x, x, x, w_q, w_k, w_v, w_o, n_heads=1)
figure, axes = plt.subplots(1, 3, figsize=(16, 4.8))
plot_attention(weights[0, 0], tokens, title="head 0: the previous token", ax=axes[0])
plot_attention(weights[0, 1], tokens, title="head 1: the verb", ax=axes[1])
plot_attention(single_head[0, 0], tokens, title="one head asked both questions", ax=axes[2])
figure.tight_layout()
plt.show()

# %%
sat = tokens.index("sat")
print(f"'mat' -> 'the' before it: head 0 {weights[0, 0, 5, 4]:.2f}, single head {single_head[0, 0, 5, 4]:.2f}")
print(f"'mat' -> 'sat':            head 1 {weights[0, 1, 5, sat]:.2f}, single head {single_head[0, 0, 5, sat]:.2f}")

# %% [markdown]
# Each head answers its own question almost with certainty (except head 0 for the first "the",
# which has no previous token and spreads evenly). The single head splits its weight half and half
# between the two answers; only for "on", whose previous token *is* the verb, do they coincide.
# That is the reason for several heads: **each head has its own softmax, so each can specialise**
# on one relation (the previous token, the verb, the subject, a matching bracket, ...) and
# report it in its own slice of the output. Trained models learn such heads by themselves
# (lesson 12 reads some from a real model).

# %% [markdown]
# ## 1b. Without the position columns
#
# Zero columns 6–11 and run the same two heads. Head 0 now has nothing to ask about, and the two
# "the"s, the same word with the same neighbours' *contents*, get exactly the same output:

# %%
x_no_position = x.clone()
x_no_position[..., 6:] = 0.0  # forget where each token stands
output_no_position, _ = multi_head_attention(x_no_position, x_no_position, x_no_position, w_q, w_k, w_v, w_o, n_heads=2)
print("without positions, the two 'the's have equal outputs:", torch.equal(output_no_position[0, 0], output_no_position[0, 4]))
print("with positions, they differ:                          ", not torch.equal(output[0, 0], output[0, 4]))

# %% [markdown]
# ## 2. The equations
#
# With $h$ heads and $d_\text{head} = d_\text{model} / h$:
#
# $$\mathrm{head}_i = \mathrm{softmax}\!\left(\frac{Q_i K_i^\top}{\sqrt{d_\text{head}}}\right) V_i,
# \qquad Q_i = X W_Q^{(i)},\ K_i = X W_K^{(i)},\ V_i = X W_V^{(i)}$$
#
# $$\mathrm{MHA}(X) = \mathrm{Concat}(\mathrm{head}_1, \dots, \mathrm{head}_h)\, W_O$$
#
# Each $W_Q^{(i)}$ is $d_\text{model} \times d_\text{head}$. Side by side they make one
# $d_\text{model} \times d_\text{model}$ matrix $W_Q = [W_Q^{(1)} \mid \dots \mid W_Q^{(h)}]$, so one
# matrix product computes every head's queries; we then **cut the last axis into heads**:
#
# | step | shape |
# |---|---|
# | $X$ | `(B, L, d_model)` |
# | $Q = X W_Q$ | `(B, L, d_model)` |
# | split heads | `(B, h, L, d_head)` |
# | scores $Q_i K_i^\top / \sqrt{d_\text{head}}$ | `(B, h, L, L)` |
# | heads (weights @ V) | `(B, h, L, d_head)` |
# | merge heads | `(B, L, d_model)` |
# | output (@ $W_O$) | `(B, L, d_model)` |
#
# Note the scale: each head compares $d_\text{head}$-wide vectors, so it divides by
# $\sqrt{d_\text{head}}$, not $\sqrt{d_\text{model}}$.

# %% [markdown]
# ## 3. Splitting heads: a reshape, then a transpose
#
# Three tokens with $d_\text{model} = 4$, two heads of width 2. Head 0 should get columns 0–1 of
# **every** token, head 1 columns 2–3.

# %%
small = torch.arange(12.0).reshape(1, 3, 4)  # (B, L, d_model): token t holds 4t .. 4t+3
print(small[0])

# %% [markdown]
# Step 1, a reshape to `(B, L, h, d_head)`: every token's row is cut into two pieces. Nothing
# moves in memory; the numbers are just read with a different shape.

# %%
pieces = small.reshape(1, 3, 2, 2)  # (B, L, h, d_head)
print(pieces[0])

# %% [markdown]
# Step 2, a transpose to `(B, h, L, d_head)`: heads become a batch axis, so that
# `scaled_dot_product_attention` attends within each head separately.

# %%
heads = pieces.transpose(1, 2)  # (B, h, L, d_head)
print("head 0:\n", heads[0, 0], "\nhead 1:\n", heads[0, 1])
print("same as split_heads:", torch.equal(heads, split_heads(small, n_heads=2)))

# %% [markdown]
# ### The reshape-only bug
#
# `small.reshape(1, 2, 3, 2)` has the right shape too, and runs without a complaint. But memory
# is read row by row, so "head 0" now holds token 0 and half of token 1:

# %%
wrong = small.reshape(1, 2, 3, 2)  # (B, h, L, d_head) in shape only
print("head 0 after a reshape alone:\n", wrong[0, 0])

# %% [markdown]
# Its "three tokens" are pieces of tokens 0 and 1; token 2 is not in head 0 at all. In a model,
# attention then runs over a scrambled sequence. Nothing crashes, the numbers are simply wrong:
# here is the hand-made example of section 1 with the buggy split.

# %%
def split_by_reshape_only(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    batch, length, d_model = t.shape
    return t.reshape(batch, n_heads, length, d_model // n_heads)  # the bug


q = split_by_reshape_only(x @ w_q, 2)  # (B, h, L, d_head), scrambled
k, v = split_by_reshape_only(x @ w_k, 2), split_by_reshape_only(x @ w_v, 2)
buggy = merge_heads(scaled_dot_product_attention(q, k, v)) @ w_o
print("shape:", tuple(buggy.shape), "(no error)   largest difference from the right output:",
      f"{(buggy - output).abs().max():.2f}")

# %% [markdown]
# ## 4. Merging heads and the output projection $W_O$
#
# Merging undoes the split: transpose back to `(B, L, h, d_head)`, then reshape to
# `(B, L, d_model)`, which puts head $i$ in columns $i \cdot d_\text{head}$ to
# $(i+1) \cdot d_\text{head} - 1$ of each token. A reshape without the transpose concatenates the
# wrong pieces (the same bug, in reverse):

# %%
print("merge_heads(split_heads(x)) == x:", torch.equal(merge_heads(heads), small))
print("reshape alone gives:\n", heads.reshape(1, 3, 4)[0])

# %% [markdown]
# After the merge, every token has its heads' outputs side by side. $W_O$ then mixes them:
# splitting its rows into blocks $W_O^{(i)}$ (rows of head $i$),
#
# $$\mathrm{Concat}(\mathrm{head}_1, \dots, \mathrm{head}_h)\, W_O = \sum_{i=1}^{h} \mathrm{head}_i\, W_O^{(i)},$$
#
# so each head writes its answer into the full $d_\text{model}$-wide output, and the heads'
# contributions add up. Without $W_O$, head $i$ could only ever write into its own slice.

# %% [markdown]
# ## 5. Parameters: as many as one wide head
#
# $W_Q, W_K, W_V, W_O$ are $d_\text{model} \times d_\text{model}$ whatever $h$ is: more heads means
# narrower heads, not more weights. The score computation costs the same too:
# $h \cdot L^2 \cdot d_\text{head} = L^2 \cdot d_\text{model}$ multiplications.

# %%
d_model = 64
for n_heads in (1, 2, 4, 8, 16):
    module = MultiHeadAttention(d_model, n_heads)
    n_parameters = sum(p.numel() for p in module.parameters())
    print(f"n_heads={n_heads:>2}  d_head={d_model // n_heads:>2}  parameters={n_parameters}"
          f"  (4·d² + 4·d = {4 * d_model**2 + 4 * d_model})")

# %% [markdown]
# ## 6. Aside: each head's value map is low-rank
#
# Follow one head's values to the output: $\mathrm{head}_i W_O^{(i)} = A_i X\, W_V^{(i)} W_O^{(i)}$,
# where $A_i$ are its weights. The product $W_V^{(i)} W_O^{(i)}$ is a
# $d_\text{model} \times d_\text{model}$ matrix, but it goes through $d_\text{head}$ dimensions
# ("value-down", then "value-up"), so its rank is at most $d_\text{head}$. Multi-head attention is
# a sum of $h$ attention-weighted, low-rank maps:

# %%
d_model, n_heads = 16, 4
d_head = d_model // n_heads
module = MultiHeadAttention(d_model, n_heads, bias=False)
tokens_in = torch.randn(1, 5, d_model)  # (B, L, d_model)
out, attention = module(tokens_in)
w_v_eq, w_o_eq = module.v_proj.weight.T, module.out_proj.weight.T  # equation layout (d_model, d_model)
total = torch.zeros_like(out)
for head in range(n_heads):
    cols = slice(head * d_head, (head + 1) * d_head)
    value_map = w_v_eq[:, cols] @ w_o_eq[cols, :]  # (d_model, d_head) @ (d_head, d_model)
    print(f"head {head}: W_V·W_O is {tuple(value_map.shape)} with rank {torch.linalg.matrix_rank(value_map)}")
    total = total + attention[:, head] @ tokens_in @ value_map  # (B, L, L) @ (B, L, d) @ (d, d)
print("sum over heads equals the module's output:", torch.allclose(total, out, atol=1e-5))

# %% [markdown]
# So each head has a **value-down** matrix $W_V^{(i)}$ ($d_\text{model} \times d_\text{head}$, its
# columns of $W_V$) and a **value-up** matrix $W_O^{(i)}$ ($d_\text{head} \times d_\text{model}$,
# its rows of $W_O$). Read backwards, that says what $W_O$ *is*: the $h$ value-up matrices stacked
# on top of each other, just as $W_V$ is the $h$ value-down matrices side by side. Nothing else is
# in it:

# %%
value_down = [w_v_eq[:, head * d_head:(head + 1) * d_head] for head in range(n_heads)]  # h × (d_model, d_head)
value_up = [w_o_eq[head * d_head:(head + 1) * d_head, :] for head in range(n_heads)]  # h × (d_head, d_model)
print("W_O == the value-up matrices stacked (rows):      ", torch.equal(torch.cat(value_up, dim=0), w_o_eq))
print("W_V == the value-down matrices side by side (cols):", torch.equal(torch.cat(value_down, dim=1), w_v_eq))
print("each head's value map = value-down @ value-up:     ",
      all(torch.linalg.matrix_rank(down @ up) <= d_head for down, up in zip(value_down, value_up)))

# %% [markdown]
# This view comes back in [lesson 13](13_modern_kv_caches.ipynb): some recent models (DeepSeek's multi-head latent attention)
# store a shared "value-down" result in their cache and fold the "value-up" matrices into $W_O$.

# %% [markdown]
# ## 7. Matching `torch.nn.MultiheadAttention`
#
# PyTorch's module stores $W_Q, W_K, W_V$ stacked in one `in_proj_weight` of shape
# `(3·d_model, d_model)`, in `nn.Linear`'s layout (output × input, the transpose of the
# equations). `MultiHeadAttention.from_torch` copies those weights into the course's module.

# %%
torch_mha = nn.MultiheadAttention(embed_dim=16, num_heads=4, batch_first=True)
ours = MultiHeadAttention.from_torch(torch_mha)
print("in_proj_weight:", tuple(torch_mha.in_proj_weight.shape), "->",
      [tuple(p.weight.shape) for p in (ours.q_proj, ours.k_proj, ours.v_proj)])

sequence = torch.randn(2, 5, 16)  # (B, L, d_model)
with torch.no_grad():
    theirs, their_weights = torch_mha(sequence, sequence, sequence, average_attn_weights=False)
    mine, my_weights = ours(sequence)
print("torch   :", [f"{v:.5f}" for v in theirs[0, 0, :6].tolist()])
print("course  :", [f"{v:.5f}" for v in mine[0, 0, :6].tolist()])
print("outputs agree within 1e-6:", torch.allclose(mine, theirs, atol=1e-6),
      "| weights agree within 1e-6:", torch.allclose(my_weights, their_weights, atol=1e-6))

# %% [markdown]
# With masks the conventions differ: PyTorch's `key_padding_mask` and `attn_mask` are `True`
# where attention is **forbidden**, the course's masks `True` where it is **allowed**.

# %%
real_tokens = torch.tensor([[True] * 5, [True, True, True, False, False]])  # (B, S): course convention
with torch.no_grad():
    theirs, _ = torch_mha(sequence, sequence, sequence, key_padding_mask=~real_tokens,
                          attn_mask=~causal_mask(5))
    mine, _ = ours(sequence, key_mask=real_tokens, causal=True)
print("causal + padding, outputs agree within 1e-6:", torch.allclose(mine, theirs, atol=1e-6))

# %% [markdown]
# ## 8. Experiment: the same weights, cut into heads
#
# Section 1's weights (with its position columns), cut into $h$ heads for every $h$ that divides
# $d_\text{model} = 12$. Top: every head's pattern; bottom left: the chosen head's weights; bottom
# right: the merged heads, with the chosen head's columns framed ($W_O = I$ here, so this is also
# the output). The title counts the parameters: per head they shrink as $h$ grows, in all they
# stay $4 \cdot 12^2$. With $h = 2$ the cut matches the two questions the weights were written
# for; with $h = 1$ one softmax must answer both; with $h = 4$ each question is cut in half.

# %%
# NBVAL_IGNORE_OUTPUT
explorer = head_explorer(tokens, x[0], w_q, w_k, w_v, w_o, n_heads=2, head=1)
save_picture(explorer, "figures/06_head_explorer.png")  # the picture below: this state, drawn by the widget
explorer

# %% [markdown]
# Without a kernel (on GitHub, in the HTML pages) the widget above cannot move; this is its
# starting state: two heads, head 1 chosen. Every word finds the verb "sat", and head 1's answer
# fills columns 6–11 of the merged output.
#
# ![The head explorer: two heads, head 1 (the verb) chosen](figures/06_head_explorer.png)

# %% [markdown]
# ## Your turn
#
# Open [the exercise notebook](../exercises/06_multi_head_attention.ipynb) and write
# `split_heads`, `merge_heads` and `multi_head_attention`. The check cells recognise the
# reshape-only split, the heads concatenated in the wrong order, a forgotten $W_O$ and a scale by
# $\sqrt{d_\text{model}}$.
#
# Before that, try here: in section 1, set `strength = 3.0` and watch the heads blur; then give
# the single head twice the strength and see whether it can answer both questions.

# %% [markdown]
# ## Summary
#
# - $h$ heads run attention in parallel on $d_\text{head} = d_\text{model}/h$-wide slices; each has
#   its own softmax, so each can specialise on one relation.
# - Split = reshape to `(B, L, h, d_head)` **then** transpose to `(B, h, L, d_head)`; a reshape
#   alone scrambles tokens without any error. Merge = transpose back, then reshape.
# - $W_O$ mixes the heads: the output is a sum of each head's contribution; each head's value path
#   $W_V^{(i)} W_O^{(i)}$ (value-down, then value-up) has rank at most $d_\text{head}$, and $W_O$ is
#   exactly the $h$ value-up matrices stacked.
# - Attention alone does not know positions; section 1 wrote them into the embeddings by hand
#   (lesson 08 does it properly).
# - The parameter count, $4 d_\text{model}^2$ (+ biases), does not depend on $h$.
#
# **Next:** [lesson 07](07_cross_attention.ipynb) lets the queries come from one sequence and the
# keys and values from another: cross-attention, the bridge between an encoder and a decoder.
