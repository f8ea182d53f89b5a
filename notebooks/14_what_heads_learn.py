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
# # 14 · What heads learn: an induction head you train, find, test and switch off
#
# **You will be able to**
# 1. train the course's own decoder (lesson 09's `Decoder`, 2 layers of 2 heads) on sequences that
#    repeat a random segment, and watch the loss on the repeated part drop suddenly (a **phase change**);
# 2. find the two heads that do the copying, a **previous-token head** and an **induction head**, by
#    their attention patterns, and see why only one head of layer 1 copies (weight decay);
# 3. measure what a head does with a **score** on held-out sequences, not with one picture;
# 4. **ablate** a head (switch its output off) and measure what the model loses;
# 5. generate with the KV cache from the trained model: it continues a sequence it saw once, and the
#    cached and uncached tokens are the same.
#
# **Builds on:** [lesson 06](06_multi_head_attention.ipynb) (heads), [lesson 08](08_positional_encodings.ipynb)
# (RoPE) and [lesson 09](09_kv_cache.ipynb) (the decoder, the cache and `generate`).

# %%
import json

import matplotlib.pyplot as plt
import torch

from attention_course.decoder import Decoder
from attention_course.generation import generate
from attention_course.heads import (
    BOS,
    INDUCTION_CONFIG,
    INDUCTION_WEIGHT_DECAY,
    WEIGHTS,
    ablate_heads,
    attention_weights,
    copying_loss,
    induction_score,
    load_induction_model,
    previous_token_score,
    repeated_sequences,
    train_induction,
    training_batch,
)
from attention_course.teaching.plotting import plot_attention

_ = torch.manual_seed(0)  # every random number below is the same on every run
torch.set_num_threads(1)  # small matrices: one thread is as fast, and gives the same numbers every run

# %% [markdown]
# ## 1. A task that needs two heads
#
# Every sequence starts with `[BOS]` (token 0), then a random segment, then **the same segment
# again**. The first copy cannot be predicted: each token is one of 47 at random, so the best
# possible loss there is $\log 47 \approx 3.85$. The second copy can be predicted perfectly, by
# anyone who can look back:
#
# ```
# position   0    1  2  3  4  5    6  7  8  9 10
# token    BOS   31  7 22  7 40   31  7 22  7 40
#                                     ▲ now at "7": where was "31" ... no: where was "7" before?
#                                       at position 2, and after it came 22  →  predict 22
# ```
#
# At position $q$ of the second copy, the model must find the earlier position $j$ that holds the
# same token and read the token at $j + 1$. One attention head cannot do that alone: a query can
# match keys by **content** ("same token as me"), but the position it must land on, $j + 1$, holds a
# different token. Two heads in a row can:
#
# 1. a **previous-token head** (layer 0): every position $p$ attends to $p - 1$ and writes "the token
#    before me was $x_{p-1}$" into its residual vector;
# 2. an **induction head** (layer 1): the query at $q$ (token $x_q$) looks for keys whose
#    "token before me" equals $x_q$; that is position $j + 1$. Its value carries $x_{j+1}$ to the output.
#
# That second head's query-key match uses what the first head wrote: this is **composition** of
# heads across layers, and the reason a single-layer model cannot learn the task.
#
# In training the period changes from sequence to sequence (6 to 20 tokens), and random tokens fill
# the rest of the 45 positions, so "look back a fixed distance" does not work; finding the earlier copy does.

# %%
generator = torch.Generator().manual_seed(0)
tokens, copyable = training_batch(2, 45, INDUCTION_CONFIG.vocab_size, (6, 20), generator)
for row, marks in zip(tokens, copyable):
    print(" ".join(f"{t:2d}" for t in row.tolist()))
    print(" ".join(" ^" if m else "  " for m in marks.tolist()), " <- the next token can be copied")
print(INDUCTION_CONFIG)
n_parameters = sum(p.numel() for p in Decoder(INDUCTION_CONFIG).parameters())
n_attention = sum(p.numel() for name, p in Decoder(INDUCTION_CONFIG).named_parameters() if ".attn." in name)
print(f"{n_parameters} parameters, {n_attention / n_parameters:.0%} of them in the attention layers")

# %% [markdown]
# ## 2. Train it, and watch the phase change
#
# The model is lesson 09's `Decoder` with 2 layers of 2 heads, `d_model = 64` and a small MLP
# (`d_ff = 64`): most of its parameters are in attention (printed above). Training minimises the usual
# next-token cross-entropy on all positions; we log it separately on the **copyable** tokens
# (the second copy) and on the others. The optimiser is AdamW with a **strong weight decay** (0.5;
# section 6 shows why). The run below is the first 300 steps of the seeded run that made the weights
# shipped with the course (`make induction-weights`, 3000 steps; its log is in
# `attention_course/data/induction_training_log.json`).

# %%
# NBVAL_IGNORE_OUTPUT
live_steps = 300
torch.manual_seed(0)
live_model = Decoder(INDUCTION_CONFIG)
live_log = train_induction(live_model, live_steps, seed=0, weight_decay=INDUCTION_WEIGHT_DECAY, log_every=25)
print(f"{live_steps} steps in {live_log.seconds[-1]:.0f} s (one thread; a busy machine is slower)")

# %%
shipped = json.loads(WEIGHTS.with_name("induction_training_log.json").read_text())
full_log = shipped["log"]
print("loss on copyable tokens, live run:  ", [round(x, 1) for x in live_log.copy_loss[::2]])
print("loss on copyable tokens, shipped log:", [round(x, 1) for x in full_log["copy_loss"][: len(live_log.steps) : 2]])
for level in (3.0, 2.0, 1.0):
    step = next(step for step, loss in zip(full_log["step"], full_log["copy_loss"]) if loss < level)
    print(f"shipped run: loss on copyable tokens first below {level} at step {step}")
print(f"after {full_log['step'][-1]} steps (weight decay {shipped['weight_decay']}): "
      f"{full_log['copy_loss'][-1]:.2f} on copyable tokens, {full_log['other_loss'][-1]:.2f} on the others")

# %%
fig, ax = plt.subplots(figsize=(8, 3.5))
ax.plot(full_log["step"], full_log["copy_loss"], color="tab:blue", alpha=0.4, label="copyable tokens (shipped run)")
ax.plot(full_log["step"], full_log["other_loss"], color="tab:orange", alpha=0.4, label="other tokens (shipped run)")
ax.plot(live_log.steps, live_log.copy_loss, "o-", color="tab:blue", markersize=3, label="copyable tokens (your run)")
ax.plot(live_log.steps, live_log.other_loss, "o-", color="tab:orange", markersize=3, label="other tokens (your run)")
ax.axhline(torch.log(torch.tensor(47.0)).item(), color="gray", linestyle=":", label="log 47: guessing")
ax.set_xlabel("training step")
ax.set_ylabel("cross-entropy")
ax.set_title("The loss on the repeated half drops suddenly: the induction head forms")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# For a long stretch little happens on the copyable tokens: the loss sits near the guessing level
# like everywhere else. Then, within about fifty steps, it falls from above 3 to below 1 (the
# printed steps), while the loss on the unpredictable tokens stays near $\log 47$. That sudden drop is the **phase change**:
# neither head is useful alone (a previous-token head is pointless without a head that reads it,
# and an induction head has nothing to match without it), so the gradient has little to follow until
# both start to form, and then they reinforce each other.
#
# (Your live run should retrace the shipped log to the printed precision on a machine like the one
# that made it; a different CPU may round differently and shift the drop by a few steps.)
#
# ## 3. The trained model on sequences it never saw
#
# From here on we use the shipped weights (3000 steps). Held-out sequences: a fresh seed and a
# period of 13, `[BOS]` + 13 random tokens + the same 13 again.

# %%
model = load_induction_model()
PERIOD = 13
held_out = repeated_sequences(256, PERIOD, INDUCTION_CONFIG.vocab_size, torch.Generator().manual_seed(1234))
first_loss, repeated_loss = copying_loss(model, held_out, PERIOD)
print(f"loss on the first copy {first_loss:.2f} (uniform guessing: {torch.log(torch.tensor(47.0)):.2f}), "
      f"on the repeated copy {repeated_loss:.2f}")
print(f"the model gives the right next token in the repeated copy with probability about {torch.exp(torch.tensor(-repeated_loss)):.2f} (geometric mean)")

# %% [markdown]
# ## 4. Look at the heads
#
# `attention_weights(model, tokens)` recomputes every layer's weights, `(layers, B, heads, T, T)`,
# the way the model computes them (pre-norm, RoPE, causal mask). Here are all four heads on one
# held-out sequence; the labels are the token ids.

# %%
attention = attention_weights(model, held_out)  # (2, 256, 2, 27, 27)
labels = ["BOS" if t == BOS else str(t) for t in held_out[0].tolist()]
fig, axes = plt.subplots(2, 2, figsize=(13, 12))
for layer in range(2):
    for head in range(2):
        plot_attention(attention[layer, 0, head], labels, title=f"layer {layer}, head {head}",
                       ax=axes[layer, head], annotate=False)
fig.tight_layout()
plt.show()

# %% [markdown]
# One head of layer 0 is a stripe just below the diagonal: every token looks at the one before
# it. In layer 1, in the second copy (the lower right quarter), **one** head shows a stripe
# **period − 1** positions back, one to the right of the earlier copy of the current token: that is
# where the token to copy sits. In the first copy there is nothing to copy, and much of its weight rests
# on `[BOS]` (measured below, with the scores). The other head of layer 1 shows no such stripe: its
# weight is spread almost evenly over all earlier tokens.
#
# ## 5. Scores: what a head does, measured on many sequences
#
# A picture of one sequence is a hypothesis. A **score** tests it on all 256 held-out sequences.
#
# - **previous-token score**: the mean weight a head puts on key $q - 1$, over all queries $q \ge 1$;
# - **induction score**: the mean weight on key $q - \text{period} + 1$, over the queries $q$ of the
#   repeated copy only (those whose token equals the token one period earlier), averaged over the
#   batch. Not over the first copy, where there is nothing to copy, and not over `[BOS]`.
#
# A perfect head of either kind scores 1; a head that spreads its weight uniformly over the earlier
# tokens scores about $1/q$ (printed below).

# %%
prev_scores = torch.stack([previous_token_score(a) for a in attention])  # (layers, heads)
induction_scores = torch.stack([induction_score(a, held_out, PERIOD) for a in attention])  # (layers, heads)
print("              previous-token   induction")
for layer in range(2):
    for head in range(2):
        print(f"layer {layer} head {head}      {prev_scores[layer, head]:.2f}          {induction_scores[layer, head]:.2f}")
prev_layer, prev_head = divmod(int(prev_scores[0].argmax()), 2)
ind_head = int(induction_scores[1].argmax())
print(f"previous-token head: layer 0, head {prev_head}; strongest induction head: layer 1, head {ind_head}")
causal = torch.ones(27, 27).tril()
uniform = (causal / causal.sum(-1, keepdim=True)).expand(256, 1, 27, 27)  # a head spreading its weight evenly
print(f"a uniform head would score {induction_score(uniform, held_out, PERIOD).item():.2f} (induction)")
first_copy_on_bos = attention[1, :, :, 1 : PERIOD + 1, 0].mean(dim=(0, 2))  # (heads,)
print("layer-1 heads, weight on [BOS] from the first copy:", [f"{w:.2f}" for w in first_copy_on_bos.tolist()])
layer0_on_bos = attention[0, :, :, 1:, 0].mean(dim=(0, 2))  # (heads,)
print("layer-0 heads, weight on [BOS] from every later token:", [f"{w:.2f}" for w in layer0_on_bos.tolist()])

# %% [markdown]
# The scores confirm the picture and put numbers on it: **one** head of layer 1 is an induction head;
# the other layer-1 head scores about what the uniform head scores, and no head of layer 0 does
# induction. One head of layer 0 is the previous-token head; the other puts much of its weight on
# `[BOS]` (the last line) and its job is less clear.
#
# ## 6. Ablation: switch a head off
#
# A score says where a head looks, not whether the model **needs** it. To test that, ablate the
# head: set its output to zero **before** the output projection $W_O$, so the other heads of the
# layer are untouched,
#
# $$\mathrm{out} = [\mathrm{head}_1, \dots, 0, \dots, \mathrm{head}_h]\, W_O,$$
#
# and measure the loss on the repeated copy again. (`ablate_heads(model, [(layer, head)])` does it
# inside a `with` block; in the exercise you write it for one layer.)

# %%
ablations = {"none": []}
ablations |= {f"layer {layer} head {head}": [(layer, head)] for layer in range(2) for head in range(2)}
ablations["both layer-1 heads"] = [(1, 0), (1, 1)]
ablated_loss = {}
for name, heads in ablations.items():
    with ablate_heads(model, heads):
        ablated_loss[name] = copying_loss(model, held_out, PERIOD)[1]
for name, loss in ablated_loss.items():
    print(f"ablate {name:20}: loss on the repeated copy {loss:.2f}  ({loss / ablated_loss['none']:.1f}x)")

# %% [markdown]
# - Switching off the **induction head** destroys copying: the loss on the repeated copy goes back
#   to the guessing level, about the loss on the first copy. Switching off the other layer-1 head
#   changes almost nothing, and switching off both does no more than switching off the induction head
#   alone. One head does all of the copying, as its score said.
# - Switching off the **previous-token head** destroys copying too: there is only one such head, and
#   the induction head cannot work without it. The mechanism needs both halves.
# - The other layer-0 head costs a little when switched off (its line above). Its scores do not say
#   what it does; the ablation says only that the model uses it somewhat. A score finds a
#   hypothesis, an ablation tests whether the model needs the head, and neither alone says everything.
#
# ### One induction head or two: what weight decay does
#
# The shipped model was trained with a strong weight decay (0.5) on purpose. With AdamW's usual weak
# decay (0.01), the same training ends with **two** induction heads in layer 1: the task gives layer
# 1 nothing else to do, and both heads start equally placed to learn copying, so both do. Such
# **redundant** heads are common in trained models, and they make single-head ablations misleading:
# switch one copy off and the other still copies.
#
# Weight decay shrinks every weight a little at every step, so a head pays for the large weights that
# make its attention sharp. Two heads doing one job pay twice for it. Under strong decay they compete:
# the head slightly ahead keeps the job, and the other's weights decay until its pattern is gone.
# It is slow, and the seed decides how slow. `scripts/train_induction.py --sweep 0 1 2 3 4 5` trained
# 6 seeds with each weight decay for 3000 steps (too long to run here) and saved, every 1000 steps,
# the best layer-1 induction score, the next best of any other head, their ratio, and the factor by
# which ablating the best head raises the loss on the repeated copy:

# %%
sweep = json.loads(WEIGHTS.with_name("induction_seed_sweep.json").read_text())


def ablate_other_factor(run: dict) -> float:
    """How much ablating the other layer-1 head (not the best) raises the loss on the repeated copy."""
    others = [h for h in range(INDUCTION_CONFIG.n_heads) if h != run["best_layer1_head"]]
    losses = [run["loss_repeated_copy_with_head_ablated"][f"1,{h}"] for h in others]
    return max(losses) / run["loss_repeated_copy"]


print(f"one dominant head: {sweep['dominance_rule']}")
print("decay  seed  ratio at 1000 2000 3000 steps   best  next   ablate: best  other   loss on repeat")
for decay in sorted({run["weight_decay"] for run in sweep["runs"]}):
    for seed in sorted({run["seed"] for run in sweep["runs"]}):
        runs = [run for run in sweep["runs"] if (run["weight_decay"], run["seed"]) == (decay, seed)]
        last = runs[-1]
        ratios = " ".join(f"{run['score_ratio']:4.1f}" for run in runs)
        print(f"{decay:5}  {seed:4}  {'':9}{ratios}         {last['best_induction_score']:.2f}  "
              f"{last['next_induction_score']:.2f}  {last['ablate_best_factor']:10.1f}x "
              f"{ablate_other_factor(last):5.1f}x  {last['loss_repeated_copy']:9.2f}")
for decay in sorted({run["weight_decay"] for run in sweep["runs"]}):
    final = [run for run in sweep["runs"] if run["weight_decay"] == decay and run["step"] == sweep["steps"]]
    print(f"weight decay {decay}: one dominant induction head in {sum(r['one_dominant_head'] for r in final)} "
          f"of {len(final)} seeds after {sweep['steps']} steps")
print(f"shipped: seed {shipped['seed']}, weight decay {shipped['weight_decay']}, {shipped['steps']} steps")

# %% [markdown]
# With the weak decay no seed ends with one dominant head: both layer-1 heads score high, and
# switching off either one raises the loss (both ablation columns). With the strong decay the ratio
# grows as the second head fades, at a pace the seed decides: after 3000 steps one head dominates in
# the number of seeds printed last, and in the others the second head still keeps part of its
# pattern. The shipped model is the default seed, one where a single head won;
# `scripts/train_induction.py --seed N` trains any of the others. The decay has a price:
# attention is less sharp (lower best scores) and the loss on the repeated copy is higher than with
# the weak decay (last column). We paid it so that one head, not two, explains the copying.
#
# ## 7. Generate with the KV cache
#
# Lesson 09's `generate` runs on the trained model unchanged. Prompt: `[BOS]`, a random segment of
# 15 tokens the model has never seen, then its first token again. Greedy decoding should continue
# the segment, which it has seen only once; with and without the cache the tokens must be identical.

# %%
segment = repeated_sequences(4, 15, INDUCTION_CONFIG.vocab_size, torch.Generator().manual_seed(99))[:, 1:16]
prompt = torch.cat([torch.full((4, 1), BOS), segment, segment[:, :1]], dim=1)  # (4, 17)
cached, _ = generate(model, prompt, n_new=14)
uncached, _ = generate(model, prompt, n_new=14, use_cache=False)
print("cached == uncached tokens:", torch.equal(cached, uncached))
print("tokens copied correctly:", f"{(cached == segment[:, 1:]).float().mean():.0%}")
print("segment :", segment[0, 1:].tolist())
print("decoded :", cached[0].tolist())
for row in range(len(segment)):
    wrong = (cached[row] != segment[row, 1:]).nonzero()[:, 0]
    if len(wrong):  # new token i follows segment token i, which the model got right
        i = int(wrong[0])
        before = int(segment[row, i])
        print(f"row {row}: first mistake at new token {i}, right after token {before}, which occurs "
              f"{int((segment[row] == before).sum())} times in the segment")
untrained, _ = generate(Decoder(INDUCTION_CONFIG).eval(), prompt, n_new=14)
print("an untrained decoder copies", f"{(untrained == segment[:, 1:]).float().mean():.0%}", "of them")

# %% [markdown]
# The model copies most tokens, not all. Each first mistake (printed) comes right after a token that
# occurs more than once in the segment: at its earlier occurrences that token was followed by
# different tokens, and matching the current token alone cannot tell which one comes next.
#
# The trained model continues a sequence it saw once, which no fixed table of "what follows what"
# could do: the segment is new, so the only way is to find it in the prompt. That is in-context
# copying, and it is the simplest form of in-context learning. Same tokens with and without the
# cache: the cache changes how much work each step does, never what the model computes.
#
# ## Your turn
#
# Open [the exercise notebook](../exercises/14_what_heads_learn.ipynb): write `induction_score` (the
# weight on the token after the earlier copy, over the repeated copy only) and `ablated_attention`
# (a layer's attention with one head's output zeroed before $W_O$). Each is checked against cases
# with the catalogued mistakes.
#
# ## Summary
#
# - On repeated random segments, a 2-layer decoder learns to copy: a previous-token head in layer 0
#   and an induction head in layer 1 that uses what it wrote. The loss on the repeated copy drops
#   suddenly, not gradually.
# - Scores measured on held-out sequences say what each head does; here they find one previous-token
#   head and one induction head.
# - Ablation says what the model needs: without the previous-token head, or without the induction
#   head, copying fails; a head with no clear score (the other layer-0 head) can still matter a little.
# - Whether one head or two learn a job depends on training: with weak weight decay both layer-1 heads
#   become redundant induction heads; strong decay makes them compete until one is left.
# - The trained model copies a new sequence in context, and the KV cache gives the same tokens as
#   recomputation.
#
# **What next?** [Lesson 12](12_capstone.ipynb) reads the heads of a real pretrained encoder with the same
# tools: a score over many sentences, chosen on some and tested on others, and ablation.
