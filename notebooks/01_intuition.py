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
# # 01 · Attention: a soft, content-based lookup
#
# **You will be able to**
# 1. say what problem attention solves: the meaning of a word depends on other words, sometimes far away;
# 2. compute attention for one word by hand: dot products, then softmax, then a weighted average;
# 3. write the same computation for a whole sentence as one matrix formula, $Y = \mathrm{softmax}(X X^\top)\,X$;
# 4. explain why attention connects two distant words in one step, where a network that reads word
#    by word needs one step per word in between;
# 5. say which earlier words a language model needs to predict the next one ("The skilled surgeon
#    operated on the patient with a …"), and why it may look only backwards.
#
# **Builds on:** Python, vectors, the dot product and matrix multiplication. Nothing about neural
# networks or transformers: this lesson starts from zero.

# %%
import matplotlib.pyplot as plt
import torch

from attention_course import scaled_dot_product_attention, softmax
from attention_course.teaching.sentences import (
    MOLE_CONTEXTS,
    MOLE_SENSES,
    mole_sentence,
    surgeon_candidates,
    surgeon_sentence,
    tiger_sentence,
)
from attention_course.teaching.plotting import plot_attention, plot_weights_bar
from attention_course.teaching.widgets import word_picker

_ = torch.manual_seed(0)  # every random number below is the same on every run

# %% [markdown]
# ## 1. The problem: who was thirsty?
#
# > The tiger jumped out of a tree to get a drink because **it** was thirsty.
#
# You know at once that "it" is the tiger: trees do not get thirsty. To understand "it", you
# looked back eleven words, skipped "tree" and "drink", and borrowed the meaning of "tiger".
#
# That is what attention does. Every word looks at every word of the sentence, decides how
# **relevant** each one is, and **adds** to itself a **mix** of the relevant ones. The word plus
# the mix is its new, context-aware meaning: it keeps what it was and gains what it found.
#
# To compute any of this, words must be numbers.

# %% [markdown]
# ## 2. Words as vectors
#
# A model represents each word by a vector, its **embedding**. Real embeddings have hundreds of
# dimensions learned from data, and no single dimension means anything you could name. Ours have
# six, each with a name, and every number was chosen by hand so you can read them:

# %%
sentence = tiger_sentence()
x = sentence.embeddings  # (L, d_model) = (15 words, 6 features)
print(f"{'':>8}" + "".join(f"{name:>8}" for name in sentence.features))
for token, row in zip(sentence.tokens, x):
    print(f"{token:>8}" + "".join(f"{value:>8.1f}" for value in row.tolist()))

# %% [markdown]
# "tiger" is a thing and very much an animal; "tree" a thing and a plant; small words like "the"
# and "of" carry only grammar. "it" is a thing that could be the animal **or** the plant: on its
# own, the pronoun does not know which.

# %% [markdown]
# ## 3. How related are two words? The dot product
#
# The dot product $a \cdot b = \sum_c a_c b_c$ is large when two vectors are large in the same
# features, and 0 when they share none. It is our **score** of how much one word should care
# about another.

# %%
it = sentence.vector("it")
for other in ["tiger", "tree", "drink", "because"]:
    print(f"it · {other:<8} = {float(it @ sentence.vector(other)):.2f}")

# %% [markdown]
# "it" scores 2 with both "tiger" and "tree" (one shared "thing", plus half of "animal" or
# "plant" times 2), less with "drink" and 0 with "because".

# %% [markdown]
# ## 4. From scores to weights: the softmax
#
# We want **weights** that are positive and add up to 1, so that we can average with them. The
# softmax does that: exponentiate each score (positive, and larger scores get much larger), then
# divide by the total:
#
# $$w_j = \frac{e^{s_j}}{\sum_{j'} e^{s_{j'}}}$$
#
# (Lesson 04 takes the softmax apart; here it is just "turn scores into percentages, favouring the
# big ones".) The scores of "it" against all 15 words are one matrix-vector product:

# %%
scores = x @ it  # (L,): it · x_j for every word j
weights = softmax(scores)  # (L,), positive, sums to 1
print("sum of the weights:", round(float(weights.sum()), 4))
for token, score, weight in zip(sentence.tokens, scores.tolist(), weights.tolist()):
    print(f"{token:>8}  score {score:4.1f}  weight {weight:.3f}")

# %% [markdown]
# The tie shows: "tiger" and "tree" get exactly the same weight. The word "it" alone cannot decide.

# %%
tiger_at, tree_at = sentence.index("tiger"), sentence.index("tree")
print(f"weight on tiger {float(weights[tiger_at]):.3f}, on tree {float(weights[tree_at]):.3f}")

# %% [markdown]
# ## 5. Context breaks the tie
#
# What made *you* choose the tiger was "was thirsty". Let us give "it" that information by adding
# the vector of "thirsty" (a living thing that needs water) to it. In a real transformer nobody
# adds it by hand: an earlier attention step already mixed "was thirsty" into "it", exactly the
# way we are about to mix "tiger" into it.

# %%
it_thirsty = it + sentence.vector("thirsty")  # (6,): "it", knowing it was thirsty
weights_thirsty = softmax(x @ it_thirsty)  # (L,)
print(f"weight on tiger {float(weights_thirsty[tiger_at]):.3f}, on tree {float(weights_thirsty[tree_at]):.3f}")
print(f"tiger / tree = {float(weights_thirsty[tiger_at] / weights_thirsty[tree_at]):.1f}×")

# %%
figure, (left, right) = plt.subplots(1, 2, figsize=(13, 3.4), sharey=True)
plot_weights_bar(weights, sentence.tokens, title='"it" alone: tiger and tree tie', ax=left)
plot_weights_bar(weights_thirsty, sentence.tokens, title='"it" that was thirsty: the tiger wins', ax=right)
figure.tight_layout()
plt.show()

# %% [markdown]
# "drink" gets some weight too: it shares "water" with "thirsty". Attention is rarely all or
# nothing; it spreads weight in proportion to relevance.

# %% [markdown]
# ## 6. The weighted average: what "it" becomes
#
# The output of attention for a word is the average of all the word vectors, each counted with its
# weight:
#
# $$y = \sum_j w_j\, x_j$$

# %%
y = weights_thirsty @ x  # (6,) = sum over j of weights_thirsty[j] * x[j]
print(f"{'':>16}" + "".join(f"{name:>8}" for name in sentence.features))
print(f"{'it (thirsty)':>16}" + "".join(f"{value:>8.2f}" for value in it_thirsty.tolist()))
print(f"{'after attention':>16}" + "".join(f"{value:>8.2f}" for value in y.tolist()))

# %% [markdown]
# The mix $y$ has much more "animal" than "plant": it is mostly the tiger. A transformer does not
# throw the word away and keep only the mix: it **adds** the mix to the word, $x + y$ (a *residual*
# connection; every transformer layer has one around its attention):

# %%
it_after = it_thirsty + y  # (6,): the word, plus what it found
for label, vector in (("it (thirsty)", it_thirsty), ("+ mix y", y), ("= x + y", it_after)):
    print(f"{label:>16}" + "".join(f"{value:>8.2f}" for value in vector.tolist()))
gain = it_after - it_thirsty
print(f"animal grew by {float(gain[1]):.2f}, plant by {float(gain[2]):.2f}")

# %% [markdown]
# "it" keeps its own features and gains much more "animal" than "plant": it has absorbed some of
# the tiger. Anything that reads this vector later (the next layer of a model) now knows what "it"
# refers to.
#
# That is why attention is called a **soft lookup**. A Python dictionary does a *hard* lookup: the
# key must match exactly and you get exactly one value back. Attention compares the query with
# *every* entry, and returns a blend of all of them, weighted by how well each matched. Because the
# blend changes smoothly with the vectors, a model can *learn* good vectors by gradient descent,
# which it could not do through an all-or-nothing dictionary lookup. And the match is on
# **content** (what the words mean), not on position: "tiger" is found because of what it is,
# wherever it stands in the sentence.

# %% [markdown]
# ## 7. Every word at once: one matrix formula
#
# Nothing above was special to "it". Stack the embeddings as the rows of a matrix $X$ of shape
# $(L, d)$; then all scores, all weights and all outputs are three lines:
#
# $$S = X X^\top \quad (L \times L), \qquad W = \mathrm{softmax}_{\text{rows}}(S), \qquad Y = W X \quad (L \times d)$$
#
# Row $i$ of $S$ holds word $i$'s scores against every word; the softmax runs along each row.

# %%
all_scores = x @ x.T  # (L, L): all_scores[i, j] = x_i · x_j
all_weights = softmax(all_scores, dim=-1)  # (L, L): each row sums to 1
outputs = all_weights @ x  # (L, d): row i is word i after attention
print("shapes:", tuple(all_scores.shape), tuple(all_weights.shape), tuple(outputs.shape))
print("row of 'it' matches section 4:", torch.allclose(all_weights[sentence.index("it")], weights))

# %% [markdown]
# The course's package computes exactly this (with one extra scaling factor, switched off here by
# `scale=1.0`; lesson 03 explains it). Queries, keys and values, the three arguments, are all $X$
# for now; lesson 02 gives them separate roles.

# %%
package_out = scaled_dot_product_attention(x, x, x, scale=1.0)  # (L, d)
print("largest difference from our three lines:", float((package_out - outputs).abs().max()))

# %% [markdown]
# And, as for "it", each word's new vector is the word plus its mix, $X + Y$, a matrix of the same
# shape $(L, d)$ that the next layer reads:

# %%
new_x = x + outputs  # (L, d): the residual connection, for every word at once
print("shape:", tuple(new_x.shape), " row of 'it' minus the word is its mix:",
      torch.allclose(new_x[sentence.index("it")] - x[sentence.index("it")], outputs[sentence.index("it")]))

# %% [markdown]
# The whole sentence as a heatmap: row $i$ is where word $i$ looks, column $j$ is how much it is looked at.

# %%
plot_attention(all_weights, sentence.tokens, title="Who attends to whom (plain dot products, no learning)")
plt.show()

# %% [markdown]
# One thing stands out: the bright diagonal. "tiger", "jumped", "tree" and "drink" look mostly at
# **themselves**. A vector's dot product with itself is large, and nothing here tells a word to
# look for something *other* than itself. Count carefully, though: a word can give itself
# strictly more weight than any other word, or tie with another word (the seven little words
# "The", "of", "a", "to", "a", "because", "was" are the same vector, so each spreads the same
# weight over all seven; "thirsty" scores "tiger", "drink" and itself equally), or look elsewhere:

# %%
self_weight = all_weights.diagonal()  # (L,): the weight each word gives itself
best_other = all_weights.masked_fill(torch.eye(len(sentence), dtype=torch.bool), -1.0).amax(dim=-1)  # (L,)
strictly = self_weight > best_other + 1e-6
tied = (self_weight - best_other).abs() <= 1e-6
elsewhere = self_weight < best_other - 1e-6
for label, chosen in (("strictly itself", strictly), ("tied with another word", tied), ("another word", elsewhere)):
    print(f"largest weight on {label:<22}: {int(chosen.sum()):>2} words "
          f"{[t for t, c in zip(sentence.tokens, chosen.tolist()) if c]}")

# %% [markdown]
# Lesson 02 fixes that: each word gets a separate **query** (what it looks for) and **key** (what
# it offers), so "thirsty" can go looking for an animal without being one.

# %% [markdown]
# ## 8. "mole" in three sentences
#
# The same word can mean different things. Our "mole" vectors have three features, one per sense,
# and "mole" alone is an even mix of all three: it could be the animal, the chemist's unit, or the
# spot on your skin. Its neighbours lean one way each.

# %%
for sense, text in MOLE_CONTEXTS.items():
    print(f"{sense:>10}: {text}")
print("mole alone:", dict(zip(MOLE_SENSES, mole_sentence("animal").vector("mole").tolist())))

# %% [markdown]
# Attention for "mole" in each sentence, exactly as for "it": scores, softmax, weighted average.
# We report each result as **shares** of its three features (dividing by their sum), so you can see
# which sense it leans to.

# %%
mole_after = {}
for sense in MOLE_CONTEXTS:
    context = mole_sentence(sense)
    mole = context.vector("mole")  # (3,)
    mole_weights = softmax(context.embeddings @ mole)  # (L,)
    mole_after[sense] = mole_weights @ context.embeddings  # (3,)
    shares = mole_after[sense] / mole_after[sense].sum()
    print(f"'mole' in the {sense} sentence → " + ", ".join(f"{n} {s:.2f}" for n, s in zip(MOLE_SENSES, shares.tolist())))

# %% [markdown]
# Before attention each share was $1/3 \approx 0.33$. After it, the sentence's own sense has about
# half. In a triangle whose corners are the three pure senses, each "mole" moves from the centre
# towards its context:

# %%
corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 0.866]])  # animal, chemistry, skin


def triangle_point(v: torch.Tensor) -> torch.Tensor:
    """Place a 3-feature vector in the triangle: its feature shares weight the three corners."""
    return (v / v.sum()) @ corners  # (2,)


figure, ax = plt.subplots(figsize=(5.5, 4.8))
ax.fill(corners[:, 0], corners[:, 1], color="0.93")
for corner, name in zip(corners.tolist(), MOLE_SENSES):
    ax.annotate(name, corner, xytext=(0, -14 if corner[1] == 0 else 4), textcoords="offset points", ha="center")
centre = triangle_point(torch.ones(3))
ax.plot(*centre, "ko")
ax.annotate('"mole" alone', centre.tolist(), xytext=(-75, 2), textcoords="offset points")
for sense, v in mole_after.items():
    end = triangle_point(v)
    ax.annotate("", end.tolist(), centre.tolist(), arrowprops={"arrowstyle": "->", "lw": 2})
    ax.plot(*end, "o", label=f'"mole" in: {MOLE_CONTEXTS[sense]}')
ax.set_xlabel("← more animal · more chemistry →")
ax.set_ylabel("more skin ↑")
ax.set_title("Attention moves each 'mole' towards its context")
ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
ax.set_aspect("equal")
ax.set_ylim(-0.12, 0.95)
plt.show()

# %% [markdown]
# ## 9. Why not just read word by word?
#
# Before transformers, language models were mostly **recurrent networks** (RNNs): they read one
# word at a time and carry a memory vector $h_t$ from word to word,
# $h_t = \tanh(W h_{t-1} + U x_t)$. For "it" to learn about "tiger", the information has to
# travel through every step in between, and each step multiplies it by a matrix and squashes it.
#
# We can measure how much the memory at a word still depends on the first word: the size of the
# derivative $\lVert \partial h_t / \partial x_0 \rVert$, for a small randomly initialised RNN
# (PyTorch's `nn.RNN`, 32 memory units), as the distance $t$ grows.

# %%
rnn = torch.nn.RNN(input_size=6, hidden_size=32, nonlinearity="tanh")
inputs = torch.randn(40, 1, 6, requires_grad=True)  # 40 random words, batch of 1
memory, _ = rnn(inputs)  # (40, 1, 32): h_t for every t
influence = []
for t in range(40):
    (grad,) = torch.autograd.grad(memory[t].sum(), inputs, retain_graph=True)
    influence.append(float(grad[0].norm()))  # how much h_t moves when word 0 moves
influence = torch.tensor(influence)
distance = sentence.index("it") - sentence.index("tiger")
print(f"tiger → it is {distance} words; RNN influence after {distance} steps: "
      f"{float(influence[distance] / influence[0]):.1e} of its value at step 0")

# %% [markdown]
# After 11 steps, the memory barely depends on the first word any more, and the curve keeps
# falling by a constant factor per step: exponentially.
#
# Now the same measurement for attention. Take 40 positions of little words, put "tiger" at one
# of them and "it" (knowing it was thirsty) at the last, and measure how much the attention output
# of "it" moves when "tiger" moves, $\lVert \partial y_\text{it} / \partial x_\text{tiger} \rVert$,
# for every distance between them:

# %%
n_positions = 40
filler = sentence.vector("of")  # a little word, (6,)


def output_of_last(words: torch.Tensor) -> torch.Tensor:
    """Lesson 01's attention output of the last word, (6,), from all words (40, 6)."""
    return scaled_dot_product_attention(words[-1:], words, words, scale=1.0)[0]


attention_influence = []
for tiger_position in range(n_positions - 1):
    words = filler.repeat(n_positions, 1)  # (40, 6)
    words[tiger_position] = sentence.vector("tiger")
    words[-1] = it_thirsty
    jacobian = torch.autograd.functional.jacobian(output_of_last, words)  # (6, 40, 6): d y_it / d every input
    attention_influence.append(float(jacobian[:, tiger_position].norm()))
attention_influence = torch.tensor(attention_influence).flip(0)  # index = distance - 1
print(f"attention influence of 'tiger' on 'it' at distances 1 … 39: "
      f"min {float(attention_influence.min()):.4f}, max {float(attention_influence.max()):.4f}")

# %% [markdown]
# The same number at every distance: "it" reads "tiger" directly, in one step, however far apart
# they are. How much it takes from "tiger" depends on what the two words mean, not on where they
# stand. (Plain attention does not even know where they stand; lesson 08 adds positions.)

# %%
figure, (left, right) = plt.subplots(1, 2, figsize=(13, 3.6), width_ratios=(3, 2))
positions = torch.arange(len(sentence))
left.scatter(positions, torch.zeros(len(sentence)), color="black", zorder=3)
for i, token in enumerate(sentence.tokens):
    left.annotate(token, (i, 0), xytext=(0, -14), textcoords="offset points", ha="center", rotation=45, va="top")
for i in range(tiger_at, sentence.index("it")):
    left.annotate("", (i + 1, 0.05), (i, 0.05), arrowprops={"arrowstyle": "->", "color": "tab:red"})
left.annotate("", (sentence.index("it"), 0.1), (tiger_at, 0.1),
              arrowprops={"arrowstyle": "->", "color": "tab:blue", "lw": 2, "connectionstyle": "arc3,rad=-0.35"})
left.text(6, 0.9, "attention: 1 step", color="tab:blue", ha="center")
left.text(6, 0.14, f"RNN: {distance} steps", color="tab:red", ha="center")
left.set_ylim(-1.0, 1.1)
left.set_xlabel("position in the sentence")
left.set_yticks([])
left.set_title("Paths from 'tiger' to 'it'")
right.semilogy(influence / influence[0], color="tab:red", label="RNN: ‖∂h_t/∂x_0‖ relative to t = 0")
right.semilogy(range(1, n_positions), attention_influence / attention_influence[0], color="tab:blue",
               label="attention: ‖∂y_it/∂x_tiger‖ relative to distance 1")
right.axvline(distance, color="0.6", linestyle=":", label=f"tiger → it ({distance} words)")
right.set_xlabel("distance t (words)")
right.set_ylabel("influence of word 0 (log scale)")
right.set_title("An untrained RNN forgets exponentially; attention does not")
right.legend(fontsize=8)
figure.tight_layout()
plt.show()

# %% [markdown]
# Trained RNNs (LSTMs especially) learn to keep information longer, but the path still has one
# step per word, and the steps must happen one after another: an RNN cannot process word 12 before
# word 11. Attention has neither problem, which is a large part of why transformers replaced RNNs.

# %% [markdown]
# ## 10. Predicting the next word: which earlier words matter?
#
# > The skilled surgeon operated on the patient with a …
#
# A *language model* (GPT and its relatives) is trained to guess the next word. You would guess
# "scalpel". Which earlier words told you? "with a" says an instrument comes next; "surgeon" and
# "operated" say it is a medical one. "skilled" and "the" do not help at all.
#
# Two things follow for attention. First, the guess may use **only the words before** the blank:
# when the model writes text, the later words do not exist yet. (Lesson 05 builds the *causal
# mask* that enforces this.) Second, the position that guesses has to look for the words that
# *help*, which need not resemble it. Here is what lesson 01's attention does from the last word
# "a", the position that must guess:

# %%
context = surgeon_sentence()  # 9 words, 5 named features
candidates = surgeon_candidates()  # scalpel, hammer, nurse, smile
print("features:", context.features)
last = context.embeddings[-1]  # "a": the position that predicts the next word
weights_a = softmax(context.embeddings @ last)  # (9,): only earlier words, nothing after the blank
for token, weight in zip(context.tokens, weights_a.tolist()):
    print(f"{token:>9} {weight:.2f}")
helpful = [context.index(w) for w in ("surgeon", "operated", "with")]
print(f"weight on the three helpful words: {float(weights_a[helpful].sum()):.2f}; "
      f"on the four little words: {float(weights_a[[0, 4, 5, 8]].sum()):.2f}")

# %% [markdown]
# "a" looks mostly at the little words that resemble it, and gives the three words that matter
# less weight than those four together. Scoring the candidates against its mix (the dot product
# again) still puts "scalpel" first, but barely:

# %%
mix_a = weights_a @ context.embeddings  # (5,)
for word, score in zip(candidates.tokens, (candidates.embeddings @ mix_a).tolist()):
    print(f"{word:>8}: {score:.2f}")

# %% [markdown]
# The position that predicts needs to *ask for* "an instrument, in a medical scene", a question
# different from what the word "a" *is*. Lesson 02 gives every position such a question (its
# **query**) and finishes this example.

# %% [markdown]
# ## 11. Experiment: pick a word
#
# Pick any word of the sentence (or "it" that knows it was thirsty) and watch its weights, and how
# the weighted average differs from the word itself. Try "thirsty": what does it look at? Try a
# little word like "of".

# %%
# NBVAL_IGNORE_OUTPUT
word_picker(sentence, {"it (knowing it was thirsty)": it_thirsty})

# %% [markdown]
# ## Your turn
#
# There is no exercise notebook for this lesson; play instead.
#
# 1. Change the sentence's ending to "because **it** was rotten". Rotten things are plants (and
#    food): describe "rotten" by a vector with only `plant` set, add it to "it", and see which
#    noun "it" picks now. The cell below does it; change the numbers and predict the result first.
# 2. In the widget, find a word whose weighted average is almost the word itself. Why is that?

# %%
rotten = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])  # features: thing, animal, plant, water, motion, grammar
weights_rotten = softmax(x @ (it + rotten))  # (L,)
print(f"'it' that was rotten: weight on tiger {float(weights_rotten[tiger_at]):.3f}, "
      f"on tree {float(weights_rotten[tree_at]):.3f}")

# %% [markdown]
# ## Summary
#
# - Attention lets each word build a new vector out of the words that are relevant to it.
# - Relevance is a **score**, here the dot product of two embeddings; the **softmax** turns a word's
#   scores into weights that are positive and sum to 1; the output is the **weighted average**.
# - For a whole sentence: $Y = \mathrm{softmax}(X X^\top)\, X$, one matrix formula, every word in
#   parallel, and any two words one step apart (their influence is the same at every distance,
#   where an RNN's fades exponentially). The model then **adds** the mix to each word: $X + Y$.
# - Predicting the next word may use only the words before it, and needs the ones that *help*
#   (surgeon, operated, with), not the ones that look alike: the reason for lesson 02's queries.
# - It is a *soft, content-based* lookup: every word answers a little, in proportion to how well
#   its content matches.
#
# **Next:** with raw embeddings a word mostly finds itself, and "it" needed our help to look for an
# animal. [Lesson 02](02_queries_keys_values.ipynb) gives each word three learned roles, a
# **query**, a **key** and a **value**, so that what a word looks for can differ from what it is.
