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
# # 02 · Queries, keys and values
#
# **You will be able to**
# 1. name the three roles a token plays in attention: its **query** (the question it asks), its
#    **key** (the label it can be found by) and its **value** (the content it hands over);
# 2. compute $Q = X W_Q$, $K = X W_K$, $V = X W_V$ and say the shape of every tensor involved;
# 3. compute all scores of a sequence at once as $Q K^\top$, and check it against a loop;
# 4. explain attention as a soft version of a dictionary lookup;
# 5. give the position that predicts the next word a query, and measure which earlier words its
#    prediction depends on.
#
# **Builds on:** [lesson 01](01_intuition.ipynb): scores as dot products, the softmax, the
# weighted average, and $Y = \mathrm{softmax}(X X^\top) X$.

# %%
import math

import matplotlib.pyplot as plt
import torch

from attention_course import attention_scores, qkv_projection, scaled_dot_product_attention, softmax
from attention_course.measure import best_seconds
from attention_course.teaching.plotting import plot_attention, plot_weights_bar
from attention_course.teaching.sentences import (
    SURGEON_FEATURES,
    TIGER_FEATURES,
    surgeon_candidates,
    surgeon_sentence,
    tiger_sentence,
)
from attention_course.teaching.widgets import query_explorer, save_picture

_ = torch.manual_seed(0)  # every random number below is the same on every run

# %% [markdown]
# ## 1. A lookup, hard and soft
#
# A Python dictionary maps **keys** to **values**. You ask with a key, and only an exact match
# answers:

# %%
legs_and_wheels = {"cat": (4, 0), "horse": (4, 0), "car": (0, 4)}
print(legs_and_wheels["cat"])
print("tiger" in legs_and_wheels)  # no exact match, no answer

# %% [markdown]
# Now let the keys be vectors that describe each entry (how much of an animal it is, how much of a
# vehicle), and let the question be a vector too: a **query**. A *hard* lookup returns the value
# of the best-matching key. A *soft* lookup, attention, returns every value, weighted by the
# softmax of how well its key matches:
#
# $$\text{hard: } v_{j^*},\ j^* = \arg\max_j q \cdot k_j \qquad\qquad
#   \text{soft: } \sum_j \mathrm{softmax}_j(q \cdot k_j)\, v_j$$

# %%
entries = ["cat", "horse", "car"]
keys = torch.tensor([[2.0, 0.0], [1.6, 1.2], [0.0, 2.0]])  # (3 entries, 2): animal, vehicle
values = torch.tensor([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0]])  # (3 entries, 2): legs, wheels
queries = {"a pet": [2.0, 0.0], "something to ride": [1.0, 1.0], "something with an engine": [0.0, 2.0]}
for question, query in queries.items():
    query = torch.tensor([query])  # (1 query, 2)
    hard = values[int((query @ keys.T).argmax())]
    soft, weights = scaled_dot_product_attention(query, keys, values, scale=1.0, return_weights=True)
    print(f"{question:>25}: weights {[round(w, 2) for w in weights[0].tolist()]}  "
          f"hard → {hard.tolist()}  soft → {[round(v, 2) for v in soft[0].tolist()]}")

# %% [markdown]
# "something to ride" matches the horse best, but also a bit of the cat and the car, and the soft
# answer blends their values: about 3 legs and 1 wheel. The hard answer jumps from one entry to
# another as the query moves; the soft one moves smoothly, and that is what lets a model *learn*
# its queries and keys with gradients.
#
# Notice the three different things: the **query** (what we ask), the **keys** (what each entry is
# found by) and the **values** (what each entry gives back). In lesson 01, every word's embedding
# $x$ played all three parts at once.

# %% [markdown]
# ## 2. Why one vector is not enough
#
# Take "thirsty" in our tiger sentence. It should *look for* the animal that is thirsty. But with
# $x$ as query and key, it looks for words that *resemble* it: in lesson 01, it scored the tiger,
# the drink and itself equally.

# %%
sentence = tiger_sentence()
x = sentence.embeddings  # (L, d_model) = (15, 6)
thirsty = sentence.index("thirsty")
lesson01_scores = x @ x[thirsty]  # (L,)
for word in ["tiger", "drink", "thirsty", "tree"]:
    print(f"thirsty · {word:<8} = {float(lesson01_scores[sentence.index(word)]):.1f}")

# %% [markdown]
# The fix is to give every token three vectors, each a different linear function of its embedding:
#
# $$q_i = x_i W_Q \qquad k_i = x_i W_K \qquad v_i = x_i W_V$$
#
# | role | vector | it says | in the dictionary |
# |---|---|---|---|
# | query | $q_i = x_i W_Q$ | what token $i$ is looking for | the question |
# | key | $k_i = x_i W_K$ | what token $i$ can be found by | the label on an entry |
# | value | $v_i = x_i W_V$ | what token $i$ hands over when found | the entry's content |
#
# The matrices $W_Q, W_K, W_V$ are **learned**: training adjusts them until the lookups are useful.
# The same three matrices serve every position.

# %% [markdown]
# ## 3. A hand-made $W_Q$: "thirsty" goes looking for an animal
#
# We can write a useful $W_Q$ by hand. Row $r$ of $W_Q$ says what a word with feature $r$ looks
# for. We keep $W_K = W_V = I$ (keys and values are the embeddings themselves) and change only
# two rows of $W_Q$:
#
# - a word that **needs water** looks for an **animal** (who else gets thirsty?);
# - a word about an **animal** looks for the **thing** it describes (a noun).

# %%
feature = {name: i for i, name in enumerate(TIGER_FEATURES)}
w_q = torch.zeros(6, 6)  # (d_model, d_k): row = feature of the asking word, column = feature it looks for
w_q[feature["water"], feature["animal"]] = 1.0
w_q[feature["animal"], feature["thing"]] = 1.0
w_k = torch.eye(6)  # (d_model, d_k)
w_v = torch.eye(6)  # (d_model, d_v)

q, k, v = qkv_projection(x, w_q, w_k, w_v)  # each (L, 6)
print("query of 'thirsty':", dict(zip(TIGER_FEATURES, q[thirsty].tolist())))
print("key of 'thirsty':  ", dict(zip(TIGER_FEATURES, k[thirsty].tolist())))

# %% [markdown]
# "thirsty" *is* an animal-and-water word (its key), but it *asks* for an animal thing (its query).
# Its scores now favour the tiger:

# %%
new_scores = k @ q[thirsty]  # (L,): q_thirsty · k_j for every j
for word in ["tiger", "drink", "thirsty", "tree"]:
    print(f"q_thirsty · k_{word:<8} = {float(new_scores[sentence.index(word)]):.1f}")

# %%
_, weights_before = scaled_dot_product_attention(x[thirsty:thirsty + 1], x, x, scale=1.0, return_weights=True)
_, weights_after = scaled_dot_product_attention(q[thirsty:thirsty + 1], k, v, scale=1.0, return_weights=True)
figure, (left, right) = plt.subplots(1, 2, figsize=(13, 3.4), sharey=True)
plot_weights_bar(weights_before[0], sentence.tokens, title='"thirsty", query = key = x (lesson 01)', ax=left)
plot_weights_bar(weights_after[0], sentence.tokens, title='"thirsty" with the hand-made W_Q', ax=right)
figure.tight_layout()
plt.show()

# %% [markdown]
# Separate queries and keys also make attention **one-directional**. "thirsty" looks for the tiger;
# the tiger (an animal word) looks for a thing, and "thirsty" is not one:

# %%
scores = attention_scores(q, k)  # (L, L): scores[i, j] = q_i · k_j
tiger = sentence.index("tiger")
print(f"thirsty → tiger: {float(scores[thirsty, tiger]):.1f}   tiger → thirsty: {float(scores[tiger, thirsty]):.1f}")
print("scores symmetric?", torch.equal(scores, scores.T), "  lesson 01's X Xᵀ symmetric?", torch.equal(x @ x.T, (x @ x.T).T))

# %% [markdown]
# ## 4. Shapes, spelled out
#
# Real models learn $W_Q, W_K, W_V$ from data and make queries and keys narrower than the
# embeddings. The sizes have names you will meet in every paper and codebase:
#
# | tensor | shape | meaning |
# |---|---|---|
# | $X$ | $(L, d_\text{model})$ | L tokens, each a $d_\text{model}$-wide embedding |
# | $W_Q$, $W_K$ | $(d_\text{model}, d_k)$ | queries and keys must share a width to be dotted |
# | $W_V$ | $(d_\text{model}, d_v)$ | values may have any width |
# | $Q$, $K$ | $(L, d_k)$ | one query and one key per token |
# | $V$ | $(L, d_v)$ | one value per token |
# | $S = Q K^\top$ | $(L, L)$ | one score per (query, key) pair |
# | output $\mathrm{softmax}(S)\,V$ | $(L, d_v)$ | one new vector per token |
#
# Random matrices (an untrained model) show the shapes:

# %%
d_model, d_k, d_v = 6, 4, 3
w_q_random = torch.randn(d_model, d_k)
w_k_random = torch.randn(d_model, d_k)
w_v_random = torch.randn(d_model, d_v)
q_r, k_r, v_r = qkv_projection(x, w_q_random, w_k_random, w_v_random)
print("x", tuple(x.shape), "→ q", tuple(q_r.shape), " k", tuple(k_r.shape), " v", tuple(v_r.shape))
print("scores", tuple(attention_scores(q_r, k_r).shape))

# %% [markdown]
# Batches work the same: a leading axis of B sentences rides along, because `@` treats every
# axis before the last two as a batch.

# %%
batch = torch.stack([x, x.flip(0)])  # (B, L, d_model) = (2, 15, 6): the sentence and its reverse
q_b, k_b, v_b = qkv_projection(batch, w_q_random, w_k_random, w_v_random)
print("batch", tuple(batch.shape), "→ q", tuple(q_b.shape), " scores", tuple(attention_scores(q_b, k_b).shape))

# %% [markdown]
# (PyTorch's `nn.Linear(d_model, d_k)` stores its weight the other way round, as
# $(d_k, d_\text{model})$, and computes `x @ weight.T`. The course stores weights as the equations
# write them, so no transpose appears.)

# %% [markdown]
# ## 5. All scores at once: $S = Q K^\top$
#
# Score $S_{ij}$ is the dot product of query $i$ with key $j$:
#
# $$S_{ij} = q_i \cdot k_j = \sum_{c=1}^{d_k} Q_{ic} K_{jc} = (Q K^\top)_{ij}$$
#
# so the whole score matrix is one matrix product. First the slow way, one pair at a time:

# %%
def scores_by_loop(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """S[i, j] = q[i] · k[j] with two Python loops. q: (L, d_k), k: (S, d_k) → (L, S)."""
    out = torch.empty(q.shape[0], k.shape[0])
    for i in range(q.shape[0]):
        for j in range(k.shape[0]):
            out[i, j] = q[i] @ k[j]
    return out


loop = scores_by_loop(q_r, k_r)  # (L, L)
matrix = q_r @ k_r.T  # (L, d_k) @ (d_k, L) = (L, L)
# Float sums in a different order can differ in the last bit, so compare with a tolerance.
print("loop equals matrix (to 1e-5):", torch.allclose(loop, matrix, atol=1e-5))
print("matrix equals attention_scores:", torch.equal(matrix, attention_scores(q_r, k_r)))

# %% [markdown]
# Same numbers (up to float rounding); the matrix form is one call that a CPU or GPU runs in
# parallel. On a longer sequence, each timed on one CPU core as the fastest of several runs after
# a warm-up (`best_seconds`: the fastest run is the one least disturbed by other programs):

# %%
# NBVAL_IGNORE_OUTPUT
q_long, k_long = torch.randn(128, 16), torch.randn(128, 16)
threads = torch.get_num_threads()
torch.set_num_threads(1)  # one core for both: the loop cannot use more, and a busy machine cannot stall a second thread
loop_seconds = best_seconds(lambda: scores_by_loop(q_long, k_long), repeats=3)
matrix_seconds = best_seconds(lambda: attention_scores(q_long, k_long), repeats=50)
torch.set_num_threads(threads)
speed_up = loop_seconds / matrix_seconds
print(f"L = 128: loop {loop_seconds * 1e3:.0f} ms, matrix {matrix_seconds * 1e6:.0f} µs: "
      f"{speed_up:,.0f}× faster, {math.log10(speed_up):.1f} orders of magnitude")

# %%
print("the matrix form is more than 100× (two orders of magnitude) faster:", speed_up > 100)

# %% [markdown]
# The loop makes $128^2 = 16\,384$ separate Python calls, each with its own overhead; the matrix
# product is one call into optimised code. The exact factor depends on the machine and on what else
# it is doing, which is why the cell above is not checked digit for digit; the order of magnitude is.

# %% [markdown]
# For batched inputs, `k.T` would reverse **all** axes of a `(B, S, d_k)` tensor; what we want is to
# swap only the last two, `k.transpose(-2, -1)`, which is what `attention_scores` does.

# %% [markdown]
# ## 6. Experiment: the whole sentence, before and after $W_Q$
#
# Left: lesson 01's attention ($Q = K = V = X$). Right: the hand-made $W_Q$ of section 3. Read a
# row to see where a word looks.

# %%
_, weights_x = scaled_dot_product_attention(x, x, x, scale=1.0, return_weights=True)
_, weights_qkv = scaled_dot_product_attention(q, k, v, scale=1.0, return_weights=True)
figure, (left, right) = plt.subplots(1, 2, figsize=(16, 6.5))
plot_attention(weights_x, sentence.tokens, title="Q = K = V = X (lesson 01)", ax=left, annotate=False)
plot_attention(weights_qkv, sentence.tokens, title="Hand-made W_Q, W_K = W_V = I", ax=right, annotate=False)
figure.tight_layout()
plt.show()

# %%
print(f"mean weight a word gives itself: {float(weights_x.diagonal().mean()):.2f} with Q = K = X, "
      f"{float(weights_qkv.diagonal().mean()):.2f} with the hand-made W_Q")

# %% [markdown]
# The diagonal is gone. Words whose query is zero (they have no animal or water feature to ask
# about) score every key 0 and take a plain average. "drink" and "thirsty" (water words) look for
# the animal; "tiger", "jumped" and "it" (animal words) look for things. A trained model learns thousands of such questions, spread across many matrices (lesson
# 06's heads).

# %% [markdown]
# ## 7. Experiment: one lookup, step by step
#
# Pick a word and a way of making Q, K and V. From left to right: the word's query above every
# key, the scores $q \cdot k_j$, the weights (their softmax) and the output $\sum_j w_j v_j$ next
# to the word's own value. Try "thirsty" under both choices, then a little word like "of".

# %%
# NBVAL_IGNORE_OUTPUT
explorer = query_explorer(sentence.tokens, {"Q = K = V = X (lesson 01)": (x, x, x), "hand-made W_Q": (q, k, v)},
                          word="thirsty", projection="hand-made W_Q")
save_picture(explorer, "figures/02_query_explorer.png")  # the picture below: this state, drawn by the widget
explorer

# %% [markdown]
# Without a kernel (on GitHub, in the HTML pages) the widget above cannot move; this is what it
# shows for "thirsty" with the hand-made $W_Q$: its query asks for an animal, the tiger's key
# answers, and the output is mostly the tiger.
#
# ![The query explorer for "thirsty" with the hand-made W_Q](figures/02_query_explorer.png)

# %% [markdown]
# ## 8. The surgeon, finished: a query for the next word
#
# Lesson 01 left a sentence unfinished:
#
# > The skilled surgeon operated on the patient with a …
#
# The position that predicts the next word is the last one, "a", and it may read only the words
# before the blank. In lesson 01 its query was its own embedding, a little word, so it looked
# mostly at the other little words. Give it a question instead: one row of a hand-made $W_Q$ says
# that a **grammar** word at the end of a phrase asks for **medicine** and **tools** (what the
# scene is about, and what "with a" announces). Keys and values stay the embeddings.

# %%
context, candidates = surgeon_sentence(), surgeon_candidates()  # 9 words; scalpel, hammer, nurse, smile
surgeon_feature = {name: i for i, name in enumerate(SURGEON_FEATURES)}
w_q_next = torch.zeros(5, 5)  # (d_model, d_k)
w_q_next[surgeon_feature["grammar"], surgeon_feature["medicine"]] = 1.0
w_q_next[surgeon_feature["grammar"], surgeon_feature["tool"]] = 1.0


def predict_next(words: torch.Tensor, w_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The last position's weights over ``words`` (S, 5) and each candidate's score against its output."""
    query = words[-1:] @ w_q  # (1, 5): the question of the position that predicts
    output, weights = scaled_dot_product_attention(query, words, words, scale=1.0, return_weights=True)
    return weights[0], candidates.embeddings @ output[0]  # (S,), (4,)


weights_next, next_scores = predict_next(context.embeddings, w_q_next)
weights_own, own_scores = predict_next(context.embeddings, torch.eye(5))  # lesson 01: the query is the word itself
print("weights of the last position:")
for token, own, asked in zip(context.tokens, weights_own.tolist(), weights_next.tolist()):
    print(f"{token:>9}   query = x: {own:.2f}   hand-made W_Q: {asked:.2f}")
print("next-word probabilities (softmax of the scores):")
for word, own, asked in zip(candidates.tokens, softmax(own_scores).tolist(), softmax(next_scores).tolist()):
    print(f"{word:>9}   query = x: {own:.2f}   hand-made W_Q: {asked:.2f}")

# %% [markdown]
# With a query of its own, the last position puts its weight on "surgeon", "with", "operated" and
# "patient", and "scalpel" becomes the clear favourite. Which earlier words does the prediction
# really depend on? Delete each one in turn and predict again:

# %%
print(f"{'without':>10} " + "".join(f"{w:>9}" for w in candidates.tokens) + "   winner")
for i, token in enumerate(context.tokens[:-1]):
    kept = [j for j in range(len(context)) if j != i]
    _, scores_without = predict_next(context.embeddings[kept], w_q_next)
    print(f"{token:>10} " + "".join(f"{v:>9.2f}" for v in scores_without.tolist())
          + f"   {candidates.tokens[int(scores_without.argmax())]}")
print(f"{'(nothing)':>10} " + "".join(f"{v:>9.2f}" for v in next_scores.tolist())
      + f"   {candidates.tokens[int(next_scores.argmax())]}")

# %% [markdown]
# Deleting "The", "skilled", "on" or "the" barely moves a score. Deleting "with" hands the win to
# "nurse" (nothing announces an instrument any more); deleting "surgeon" leaves "scalpel" ahead of
# "hammer" by much less. The words that matter for the next word are the ones the query finds,
# wherever they stand, and only words *before* the blank take part: lesson 05's causal mask makes
# sure of that when a model learns from whole sentences.

# %% [markdown]
# ## Your turn
#
# Open [the exercise notebook](../exercises/02_queries_keys_values.ipynb) and write
# `qkv_projection` and `attention_scores`. Each check cell tells you at once whether your function
# is right, and if not, which common mistake it looks like.
#
# Before that, try in this notebook: add a row to the hand-made $W_Q$ so that "it" looks for
# animals (set `w_q[feature["thing"], feature["animal"]]`), and predict what changes for "it" and
# for "tiger".

# %% [markdown]
# ## Summary
#
# - Each token has a **query** (what it looks for), a **key** (what it is found by) and a **value**
#   (what it gives), all linear in its embedding: $Q = X W_Q$, $K = X W_K$, $V = X W_V$.
# - Scores for a whole sequence are one product, $S = Q K^\top$ of shape $(L, S)$; unlike
#   $X X^\top$ it need not be symmetric, and a word need not find itself.
# - Attention is a soft dictionary lookup: every value comes back, weighted by the softmax of how
#   well its key matches the query.
# - The position that predicts the next word needs a query of its own: with one, "The skilled
#   surgeon operated on the patient with a …" looks back at "surgeon", "operated" and "with", and
#   predicts "scalpel"; without "with", it predicts "nurse".
#
# **Next:** [lesson 03](03_scaling.ipynb) shows why real models divide these scores by
# $\sqrt{d_k}$ before the softmax, and what goes wrong when they don't.
