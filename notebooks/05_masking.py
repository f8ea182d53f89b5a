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
# # 05 · Masking: what a query may not see
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{d_k}} + M\right) V,
#   \qquad M_{ij} = \begin{cases} 0 & \text{query } i \text{ may see key } j \\ -\infty & \text{otherwise} \end{cases}$$
#
# **You will be able to**
# 1. build a **causal** mask and explain why it lets a decoder train on every position at once;
# 2. build a **padding** mask for a batch of sentences of different lengths, and apply it to keys;
# 3. combine masks, and read attention heatmaps with tokens on both axes;
# 4. explain why masks use $-\infty$ rather than a large negative number, and what happens to a
#    query that may see no key at all.
#
# **Builds on:** scaled scores ([lesson 03](03_scaling.ipynb)) and the stable softmax
# ([lesson 04](04_softmax.ipynb)).

# %%
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from attention_course import (
    causal_mask,
    combine_masks,
    key_mask_to_attention_mask,
    masked_attention,
    padding_mask,
    scaled_dot_product_attention,
    softmax,
)
from attention_course.teaching.sentences import PAD, padded_batch, tiger_sentence
from attention_course.teaching.plotting import plot_attention
from attention_course.teaching.widgets import mask_builder, save_picture

_ = torch.manual_seed(0)  # every random number below is the same on every run

# %% [markdown]
# ## 1. A mask hides keys by giving them a score of $-\infty$
#
# A boolean mask says, for every (query, key) pair, whether the query may look at the key. In this
# course (and in PyTorch's `scaled_dot_product_attention`), `True` means **allowed**. A hidden
# key's score becomes $-\infty$ before the softmax, and $e^{-\infty} = 0$: it gets no weight, and
# the allowed keys share all of it.

# %%
scores = torch.tensor([2.0, 1.0, 0.0, -1.0])
allowed = torch.tensor([True, True, False, True])
masked_scores = scores.masked_fill(~allowed, float("-inf"))
print("masked scores:", masked_scores.tolist())
print("weights:      ", [round(w, 3) for w in softmax(masked_scores).tolist()])
print("softmax of the allowed scores alone:", [round(w, 3) for w in softmax(scores[allowed]).tolist()])

# %% [markdown]
# ## 2. The causal mask: no peeking at the future
#
# A language model (a *decoder*, like GPT) learns to predict each next word from the words before
# it. Training shows it a whole sentence at once and asks for *every* next word in parallel: after
# "The" predict "tiger", after "The tiger" predict "jumped", and so on. If position $i$ could attend
# to position $i + 1$, it would just read the answer. So query $i$ may only see keys $j \le i$: a
# lower-triangular mask.

# %%
sentence = tiger_sentence()
tokens = list(sentence.tokens[:8])  # "The tiger jumped out of a tree to"
x = sentence.embeddings[:8]  # (L, d_model) = (8, 6)
causal = causal_mask(len(tokens))  # (L, L) bool, True where j <= i
print(causal.int())

# %%
_, weights = scaled_dot_product_attention(x, x, x, causal, return_weights=True)  # weights (L, L)
figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
plot_attention(causal.float(), tokens, title="Causal mask (1 = may attend)", ax=left, cmap="Greys",
               colorbar_label="1 = may attend, 0 = hidden")
plot_attention(weights, tokens, title="Attention weights under the causal mask", ax=right)
figure.tight_layout()
plt.show()

# %% [markdown]
# Everything above the diagonal is 0; "The" can see only itself.
#
# **Above or below the diagonal?** Some texts say the causal mask hides everything *below* the
# diagonal. Both are right: it is one mask in two layouts. This course (and PyTorch) puts queries
# on the rows and keys on the columns, so the hidden future keys ($j > i$) sit **above** the
# diagonal; a layout with keys on the rows and queries on the columns is the transpose, and there
# the same hidden pairs sit **below** it.

# %%
hidden = ~causal  # (L, L): True where query i may NOT see key j
figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
plot_attention(hidden.float(), tokens, title="rows = queries, columns = keys (this course):\nhidden pairs above the diagonal",
               ax=left, cmap="Reds", annotate=False, colorbar_label="1 = hidden (score set to -∞)")
plot_attention(hidden.T.float(), tokens, title="rows = keys, columns = queries (transposed):\nthe same pairs below the diagonal",
               ax=right, cmap="Reds", annotate=False, colorbar_label="1 = hidden (score set to -∞)")
right.set_xlabel("query (attending)")
right.set_ylabel("key (attended to)")
figure.tight_layout()
plt.show()
print("hidden pairs strictly above the diagonal in the course's layout:", torch.equal(hidden, hidden.triu(1)))
print("the same pairs strictly below it in the transposed layout:     ", torch.equal(hidden.T, hidden.T.tril(-1)))
#
# **The payoff: parallel equals sequential.** The output at position $i$ with the causal mask is
# exactly what attention computes if it is only ever shown the first $i + 1$ words. So one pass
# over the sentence trains all 8 predictions at once, and each is honest:

# %%
parallel = scaled_dot_product_attention(x, x, x, causal)  # (L, d_model), all positions at once
one_by_one = torch.stack([
    scaled_dot_product_attention(x[i:i + 1], x[:i + 1], x[:i + 1])[0]  # position i, seeing words 0..i only
    for i in range(len(tokens))
])
# Same operations on the same numbers, only grouped differently: agreement to float32 rounding.
print("parallel == one word at a time:", torch.allclose(parallel, one_by_one, atol=1e-6))

# %% [markdown]
# ## 3. The padding mask: batches of different lengths
#
# To process several sentences in one tensor, the shorter ones are filled up with a padding token
# to the length of the longest. Padding is not text: no real token should attend to it.

# %%
batch_tokens, embeddings, lengths = padded_batch()  # embeddings (B, S, d_model) = (3, 4, 8)
for row in batch_tokens:
    print(row)
print("lengths:", lengths.tolist())

# %%
key_mask = padding_mask(lengths)  # (B, S): True at real tokens
print(key_mask)

# %% [markdown]
# The mask is per **key**: each sentence's queries must not look at its padded *keys*. So the
# `(B, S)` mask becomes `(B, 1, S)`, which broadcasts over the query axis of the scores
# `(B, L, S)`. Padded *queries* still get an output (they are ignored later, e.g. by the loss);
# masking them too would leave rows with nothing to see (section 6).

# %%
attention_mask = key_mask_to_attention_mask(key_mask)  # (B, 1, S)
q = k = v = embeddings  # self-attention on the raw embeddings, (B, S, d_model)
out, weights = masked_attention(q, k, v, attention_mask)  # out (B, S, d_model), weights (B, S, S)
print("mask", tuple(attention_mask.shape), "→ weights", tuple(weights.shape))
figure, axes = plt.subplots(1, 3, figsize=(16, 4.2))
for b, ax in enumerate(axes):
    plot_attention(weights[b], batch_tokens[b], title=f"sentence {b}, padding masked", ax=ax)
figure.tight_layout()
plt.show()

# %% [markdown]
# The `<pad>` columns of sentence 1 are 0. Proof that padding cannot leak in: change what the pad
# positions contain, and the real tokens' outputs do not move.

# %%
changed = embeddings.clone()
changed[1, 2:] = 100.0  # sentence 1 ("it drank") has padding at positions 2 and 3
out_changed, _ = masked_attention(changed, changed, changed, attention_mask)
out_unmasked, _ = masked_attention(changed, changed, changed, None)
print("real tokens of sentence 1, masked:  ", torch.equal(out[1, :2], out_changed[1, :2]))
print("real tokens of sentence 1, unmasked:", torch.equal(out[1, :2], out_unmasked[1, :2]))

# %% [markdown]
# ## 4. Combining masks
#
# A decoder trained on a padded batch needs both: no future, no padding. Masks combine with a
# logical AND (a key is visible only if every mask allows it), broadcasting `(S, S)` with
# `(B, 1, S)` to `(B, S, S)`:

# %%
both = combine_masks(causal_mask(embeddings.shape[1]), attention_mask)  # (B, S, S)
print("combined mask", tuple(both.shape))
_, weights_both = masked_attention(q, k, v, both)
figure, axes = plt.subplots(2, 3, figsize=(16, 8))
for b in range(3):
    plot_attention(both[b].float(), batch_tokens[b], title=f"sentence {b}: causal AND padding", ax=axes[0, b],
                   cmap="Greys", colorbar_label="1 = may attend, 0 = hidden")
    plot_attention(weights_both[b], batch_tokens[b], title=f"sentence {b}: weights", ax=axes[1, b])
figure.tight_layout()
plt.show()

# %% [markdown]
# ## 5. $-\infty$ or a large negative number?
#
# Many implementations write $-10^9$ (or the dtype's most negative value) instead of $-\infty$.
# Where a row keeps at least one visible key, the two give the same weights: $e^{-10^9 - m}$
# underflows to exactly 0 in float32.

# %%
raw = torch.randn(4, 4)  # (L, S) scores
mask = causal_mask(4)
with_inf = torch.softmax(raw.masked_fill(~mask, float("-inf")), dim=-1)
with_big = torch.softmax(raw.masked_fill(~mask, -1e9), dim=-1)
print("largest difference, -inf vs -1e9:", float((with_inf - with_big).abs().max()))

# %% [markdown]
# But $-10^9$ does not exist in float16, whose most negative number is $-65504$:

# %%
try:
    raw.half().masked_fill(~mask, -1e9)
except RuntimeError as error:
    print("float16 masked_fill(-1e9):", error)
print("float16 most negative value:", torch.finfo(torch.float16).min)

# %% [markdown]
# And the two differ completely on a row where **every** key is masked. With $-\infty$, the textbook
# softmax computes $0/0$ = NaN. With $-10^9$, all scores are equally bad, so the softmax spreads
# the weight *evenly over the masked keys*: silently attending to exactly what was supposed to be
# hidden.

# %%
row = torch.tensor([[0.5, 2.0, -1.0]])  # one query, three keys, all masked below
nothing_visible = torch.zeros(1, 3, dtype=torch.bool)
print("torch.softmax with -inf:", torch.softmax(row.masked_fill(~nothing_visible, float("-inf")), dim=-1).tolist())
print("torch.softmax with -1e9:", [round(w, 3) for w in torch.softmax(row.masked_fill(~nothing_visible, -1e9), dim=-1)[0].tolist()])
print("course softmax with -inf:", softmax(row.masked_fill(~nothing_visible, float("-inf")), dim=-1).tolist())

# %% [markdown]
# ## 6. A query that can see nothing
#
# When does that happen? Batches are sometimes padded on the **left** (generation code does it so
# that all sentences end at the same position). Add a causal mask, and the pads at the front may
# see only themselves and the pads before them: nothing but padding, so their rows are entirely
# masked.

# %%
left_tokens = [PAD, PAD, "it", "drank"]
left_key_mask = torch.tensor([[False, False, True, True]])  # (B=1, S=4)
left_mask = combine_masks(causal_mask(4), key_mask_to_attention_mask(left_key_mask))[0]  # (4, 4)
print(left_mask.int())
print("rows with no visible key:", [left_tokens[i] + f" (position {i})" for i in range(4) if not left_mask[i].any()])

# %% [markdown]
# What each implementation returns for those rows (the two pads) and for the real tokens:

# %%
xq = embeddings[1, [2, 3, 0, 1]][None]  # (1, 4, d_model): "<pad> <pad> it drank", with some pad content
torch_sdpa = F.scaled_dot_product_attention(xq, xq, xq, attn_mask=left_mask)  # PyTorch's fused attention
textbook_scores = (xq @ xq.transpose(-2, -1) / xq.shape[-1] ** 0.5).masked_fill(~left_mask, float("-inf"))
textbook = torch.softmax(textbook_scores, dim=-1) @ xq  # the formula written out, as in many tutorials
mha = torch.nn.MultiheadAttention(xq.shape[-1], num_heads=1, batch_first=True)
with torch.no_grad():
    torch_mha, _ = mha(xq, xq, xq, attn_mask=~left_mask)  # nn.MultiheadAttention: True = NOT allowed
course, _ = masked_attention(xq, xq, xq, left_mask)
for name, result in (("textbook softmax(-inf) @ V", textbook), ("torch nn.MultiheadAttention", torch_mha),
                     ("torch F.scaled_dot_product_attention", torch_sdpa), ("course masked_attention", course)):
    nan_rows = [i for i in range(4) if torch.isnan(result[0, i]).any()]
    zero_rows = [i for i in range(4) if bool((result[0, i] == 0).all())]
    print(f"{name:>37}: NaN in rows {nan_rows}, all-zero rows {zero_rows}")

# %% [markdown]
# The textbook formula and `nn.MultiheadAttention` give NaN; the course (and, in recent versions,
# PyTorch's `F.scaled_dot_product_attention`, as measured above for this installed version) gives
# a zero vector. Why it matters: NaN spreads. In the next layer, "drank" gives the pad position a
# weight of exactly 0, yet $0 \times \text{NaN} = \text{NaN}$:

# %%
next_weights = torch.tensor([[0.0, 0.0, 0.4, 0.6]])  # "drank" attends to "it" and itself, not to the pads
print("next layer on the textbook output contains NaN:", bool((next_weights @ textbook[0]).isnan().any()))
print("next layer on the course output contains NaN:  ", bool((next_weights @ course[0]).isnan().any()))

# %% [markdown]
# One NaN row in one sentence turns into NaN gradients for the whole batch. The course's
# convention (a fully masked row gets zero weights and a zero output) is what the package's
# `softmax` does for an all $-\infty$ row, so `masked_attention` inherits it.

# %% [markdown]
# ## 7. Experiment: build a mask
#
# Switch the causal mask on and off, choose how many of the 8 positions hold real words and on which
# side the padding goes, and add a sliding window (each query sees keys at most $w$ positions
# away; lesson 10 builds on it). Left: the combined mask. Right: the weights it gives. A query row
# that sees no key at all is named in red and gets zero weights (and a zero output). Try left
# padding with the causal mask on; then a window of 0 with right padding.

# %%
# NBVAL_IGNORE_OUTPUT
builder = mask_builder(sentence.tokens[:8], sentence.embeddings[:8], causal=True, pad_side="left", n_real=5,
                       window=2, use_window=True)
save_picture(builder, "figures/05_mask_builder.png")  # the picture below: this state, drawn by the widget
builder

# %% [markdown]
# Without a kernel (on GitHub, in the HTML pages) the widget above cannot move; this is its
# starting state: five words padded on the left, causal, window 2. The three pads see nothing
# (only earlier pads), so their rows are zero; every real word sees itself and at most two words
# before it.
#
# ![The mask builder: causal, left padding, window 2](figures/05_mask_builder.png)

# %% [markdown]
# ## Your turn
#
# Open [the exercise notebook](../exercises/05_masking.ipynb) and write `causal_mask`,
# `padding_mask` and `masked_attention`. The checks include a fully masked row: your attention
# must return zeros there, not NaN.

# %% [markdown]
# ## Summary
#
# - A mask says which keys each query may see (`True` = allowed); hidden scores become $-\infty$,
#   so their weight is exactly 0 and the visible keys share all of it.
# - The **causal** mask (lower triangle) lets a decoder train every position at once: the result
#   equals running attention one prefix at a time. With queries on the rows its hidden pairs sit
#   above the diagonal; texts that put keys on the rows draw the same mask hidden below it.
# - The **padding** mask hides padded *keys*, `(B, S)` → `(B, 1, S)`; changing the padding then
#   cannot change any real token's output. Masks combine with AND.
# - $-10^9$ instead of $-\infty$ works until a row is fully masked (it then attends evenly to
#   everything hidden) or the dtype is float16 (it overflows). A fully masked row gives NaN in the
#   textbook formula and zeros in the course.
#
# **Next:** [lesson 06](06_multi_head_attention.ipynb) runs several attentions side by side, each with its
# own $W_Q, W_K, W_V$: multi-head attention.
