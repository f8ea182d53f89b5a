# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 09 · The KV cache
#
# **You will be able to**
# 1. explain why a decoder may keep the keys and values of earlier tokens and reuse them, and
#    why only the new token's query is needed at each step;
# 2. decode with a cache (prefill the prompt, then one token per step) and check that the logits
#    are the same as recomputing everything;
# 3. count the work per step, $O(t)$ with the cache against $O(t^2)$ without, and measure it;
# 4. compute a cache's memory from $2 \times \text{layers} \times \text{kv heads} \times d_\text{head}
#    \times \text{tokens} \times \text{bytes}$ for real models;
# 5. say what multi-query and grouped-query attention trade for a smaller cache.
#
# **Builds on:** [lesson 05](05_masking.ipynb) (the causal mask), [lesson 06](06_multi_head_attention.ipynb)
# (heads), [lesson 07](07_cross_attention.ipynb) (cross-attention) and
# [lesson 08](08_positional_encodings.ipynb) (RoPE).

# %%

import matplotlib.pyplot as plt
import torch

from attention_course import MultiHeadAttention, causal_mask, merge_heads, scaled_dot_product_attention, split_heads
from attention_course.decoder import Decoder, DecoderConfig
from attention_course.generation import decode_step, generate, new_cache, prefill
from attention_course.kv_cache import GrowingKVCache, grouped_query_attention, kv_cache_bytes
from attention_course.measure import best_seconds, largest_allocation
from attention_course.teaching.widgets import decode_stepper, save_figure

_ = torch.manual_seed(0)  # every random number below is the same on every run
# One token at a time is a few thousand tiny operations: a second thread only adds waiting.
torch.set_num_threads(1)

# %% [markdown]
# ## 1. Generating text recomputes almost everything
#
# A decoder-only model (GPT, Llama, Mistral) writes one token at a time. To choose token $t+1$ it
# runs on tokens $1 \dots t$ and reads the prediction at the last position; then it appends the
# new token and runs again, on $t+1$ tokens. Done naively, step $t$ recomputes the queries, keys
# and values of all $t$ tokens, although only one of them is new.
#
# Our model for this lesson is the package's small decoder (`attention_course.decoder`):
# pre-norm blocks of causal self-attention with RoPE and an MLP. Its weights are **random**: it
# writes gibberish, but speed, memory and the equality of logits do not depend on what the weights
# learned.

# %%
config = DecoderConfig(vocab_size=64, d_model=64, n_layers=2, n_heads=4, max_seq_len=320)
model = Decoder(config).eval()
print(config)
print("parameters:", sum(p.numel() for p in model.parameters()))

# %% [markdown]
# The cache keeps, for every layer, the keys and values of every token seen so far. Here is the
# claim it rests on: **feeding one more token does not change the keys and values of the earlier
# ones**. Run the model on 5 tokens, then on the same 5 plus one, and compare what each run stored:

# %%
tokens = torch.tensor([[5, 17, 42, 8, 23, 61]])  # (B=1, 6 token ids)
five, six = GrowingKVCache(config.n_layers), GrowingKVCache(config.n_layers)
with torch.no_grad():
    model(tokens[:, :5], cache=five)
    model(tokens, cache=six)
print("layer 1 keys, 5 tokens:", tuple(five.keys[1].shape), " 6 tokens:", tuple(six.keys[1].shape))
for layer in range(config.n_layers):
    k_diff = (six.keys[layer][:, :, :5] - five.keys[layer]).abs().max().item()
    v_diff = (six.values[layer][:, :, :5] - five.values[layer]).abs().max().item()
    print(f"layer {layer}: first 5 keys and values unchanged (to 1e-6): {max(k_diff, v_diff) < 1e-6}")

# %% [markdown]
# Nothing changed, not even in layer 1, whose keys come from layer 0's outputs: under the causal mask, position
# $i$ never looks at positions after $i$, so nothing downstream of it can change when a token is
# appended. (Where an earlier position *could* see later ones, as in an encoder, there is no such
# cache.) So the model only has to compute the **new** token's query, key and value, append the
# key and value to the cache, and attend.

# %% [markdown]
# ## 2. The math of one cached step
#
# At step $t$ the new token has query $q_t$, key $k_t$ and value $v_t$ (one row each, per head).
# The cache holds $K_{1:t-1}$ and $V_{1:t-1}$. Append, then attend:
#
# $$K_{1:t} = \begin{bmatrix} K_{1:t-1} \\ k_t \end{bmatrix}, \qquad
#   V_{1:t} = \begin{bmatrix} V_{1:t-1} \\ v_t \end{bmatrix}, \qquad
#   o_t = \mathrm{softmax}\!\left(\frac{q_t K_{1:t}^\top}{\sqrt{d_\text{head}}}\right) V_{1:t}.$$
#
# The appending is along the **positions** axis: with the layout `(B, heads, positions, d_head)`
# that is `dim=-2`. With RoPE, $q_t$ and $k_t$ are rotated by their position $t$ (not by 0, even
# though they are the first row of this step's input), and the cache stores keys already rotated.
#
# Cost of step $t$ for one layer, with $d$ = `d_model`:
#
# | | projections and MLP | attention scores and weighted sum |
# |---|---|---|
# | recompute all $t$ tokens | $t \cdot O(d^2)$ | $O(t^2 \, d)$ |
# | with the cache | $O(d^2)$ | $O(t \, d)$ |
#
# Over $N$ generated tokens the cache turns $O(N^2 d^2 + N^3 d)$ into $O(N d^2 + N^2 d)$.

# %% [markdown]
# ### The mask of a single new query
#
# The new token sits at the **last** position, so its row of the causal mask is the last row of
# the full mask: all `True`, it may see every key. A mask aligned at the top-left, the way
# `causal_mask(1, t)` or PyTorch's `is_causal=True` align it for a $1 \times t$ score matrix,
# would let it see key 0 only:

# %%
t = 5
print("last row of the full causal mask:", causal_mask(t)[-1:].int().tolist())
print("causal_mask(1, t), top-left:     ", causal_mask(1, t).int().tolist())

# %% [markdown]
# With several new tokens at once (the prompt, fed in one pass: the **prefill**), the new rows are
# the last $T$ rows of the full mask, `causal_mask(length + T)[-T:]`.

# %% [markdown]
# ## 3. The work per step, counted
#
# Multiply-adds of one generation step, from the model's sizes (each multiply-add is 2 FLOPs):

# %%
def flops_per_step(config: DecoderConfig, t: int, cached: bool) -> int:
    """FLOPs to produce the logits for position t: all t tokens (recompute) or only the last one."""
    d, d_ff, d_head = config.d_model, config.d_ff, config.d_head
    per_token = 2 * d * (config.n_heads + 2 * config.n_kv_heads) * d_head + 2 * d * d + 4 * d * d_ff  # (B=1)
    logits = 2 * d * config.vocab_size

    def attention(n_keys: int) -> int:  # one query over n_keys keys: scores, then the weighted sum
        return 4 * config.n_heads * d_head * n_keys

    if cached:
        return config.n_layers * (per_token + attention(t)) + logits
    return config.n_layers * (t * per_token + sum(attention(i) for i in range(1, t + 1))) + t * logits


steps = list(range(1, 301))
recompute_flops = [flops_per_step(config, t, cached=False) for t in steps]
cached_flops = [flops_per_step(config, t, cached=True) for t in steps]
print(f"step 300: recompute {recompute_flops[-1] / 1e6:.1f} MFLOP, cached {cached_flops[-1] / 1e6:.3f} MFLOP, "
      f"ratio {recompute_flops[-1] / cached_flops[-1]:.0f}")
print(f"300 steps in total: ratio {sum(recompute_flops) / sum(cached_flops):.0f}")
per_token = 2 * config.d_model * (config.n_heads + 2 * config.n_kv_heads) * config.d_head \
    + 2 * config.d_model**2 + 4 * config.d_model * config.d_ff
print(f"cached step: attention over the cache costs as much as the projections + MLP at t = "
      f"{per_token // (4 * config.n_heads * config.d_head)}")

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.6))
ax.plot(steps, [f / 1e6 for f in recompute_flops], label="recompute all t tokens")
ax.plot(steps, [f / 1e6 for f in cached_flops], label="with KV cache (one new token)")
ax.set_yscale("log")
ax.set_xlabel("step t (tokens so far)")
ax.set_ylabel("MFLOP for this step (log scale)")
ax.set_title(f"Work per generated token ({config.n_layers} layers, d_model={config.d_model})")
ax.legend()
plt.show()

# %% [markdown]
# The cached curve is almost flat: at this size the projections and the MLP ($O(d^2)$ per token)
# dominate the attention over the cache ($O(t\,d)$) until $t$ is about 400. The recomputing
# curve grows linearly in $t$ from the projections and quadratically from attention.

# %% [markdown]
# ## 4. Decoding with a cache, step by step
#
# `prefill` runs the prompt through the model in one pass and fills the cache; each
# `decode_step` feeds one token. Inside every attention layer both call `cached_attention_step`:
# rotate the new queries and keys by their positions, append keys and values to the cache,
# attend. (Without a cache, the model calls the same function with an empty cache and all tokens
# new, so both paths run the same arithmetic.)

# %%
prompt = torch.tensor([[3, 14, 15, 9, 26]])  # (B=1, P=5)
cache = new_cache(model, batch_size=1, kind="growing")
with torch.no_grad():
    logits = prefill(model, prompt, cache)[:, -1]  # (1, vocab): predicts token 6
    print(f"after prefill: cache length {cache.length}, layer 0 keys {tuple(cache.keys[0].shape)}")
    for _ in range(3):
        token = logits.argmax(dim=-1, keepdim=True)  # (1, 1), greedy
        logits = decode_step(model, token, cache)
        print(f"fed token {token.item():2d}: cache length {cache.length}, layer 0 keys {tuple(cache.keys[0].shape)}")

# %% [markdown]
# Each step appends one position per layer: the keys grow along axis `-2`,
# `(B, heads, positions, d_head)`.
#
# Now the test that matters: generate 64 tokens greedily with and without the cache, and compare
# the tokens and every step's logits.

# %%
new_tokens, logits_recomputed = generate(model, prompt, 64, use_cache=False)
cached_tokens, logits_cached = generate(model, prompt, 64, cache_kind="growing")
print("first generated tokens:", new_tokens[0, :12].tolist())
print("identical tokens:", torch.equal(new_tokens, cached_tokens))
print("logits agree to 1e-5:", torch.allclose(logits_cached, logits_recomputed, atol=1e-5, rtol=0),
      f"(logits of size up to {logits_recomputed.abs().max().item():.1f})")

# %% [markdown]
# The logits agree to float32 rounding (summing the same numbers in another order differs by a few
# units in the last place), so the tokens are the same. Sampling too: with the same seeded random
# generator, cached and uncached sampling draw the same tokens.

# %%
samples = [generate(model, prompt, 32, use_cache=use_cache, temperature=1.0,
                    generator=torch.Generator().manual_seed(1))[0] for use_cache in (False, True)]
print("sampled:", samples[0][0, :12].tolist(), "... identical:", torch.equal(*samples))

# %% [markdown]
# ### Growing or preallocated
#
# The cache above **grows**: each step concatenates, which allocates a new tensor one position
# longer per layer and copies the old one into it. A **preallocated** cache allocates
# `(layers, B, kv_heads, capacity, d_head)` once and writes each step's keys and values into the
# next free positions; attention then reads the filled part, `buffer[..., :length, :]`, a view.
# Forgetting that slice means attending over the empty slots too: zeros, whose scores of 0 still
# get weight. `generate` uses a preallocated cache by default.

# %%
cache = new_cache(model, batch_size=1, kind="preallocated", capacity=100)
print("preallocated keys:", tuple(cache.keys.shape), f"{cache.memory_bytes() / 1024:.0f} KiB, before any token")
prealloc_tokens, _ = generate(model, prompt, 64)
print("same tokens as recomputing:", torch.equal(prealloc_tokens, new_tokens))

# %% [markdown]
# ### Step through it
#
# The decode stepper replays a 24-token greedy generation from the prompt above, one step at a
# time (everything is decoded once, up front): the cached keys of layer 0 filling up below the
# prompt (the black line), the cache's bytes, and the attention work of one step counted in
# query-key pairs per layer and head: recomputing all $t$ tokens under the causal mask costs
# $t(t+1)/2$ pairs, one cached step $t$. Switch "work" to "total so far" for the whole generation.

# %%
# NBVAL_IGNORE_OUTPUT
stepper = decode_stepper(model, prompt, n_new=24)
save_figure(stepper, "figures/09_decode_stepper.png", step=12, work="total so far")
stepper

# %% [markdown]
# ![The decode stepper after 12 steps: 17 cached keys of layer 0, the cache's memory growing linearly, and the total attention work of recomputing against reading the cache](figures/09_decode_stepper.png)
#
# *The stepper after step 12, total work (a saved picture, for readers without a running kernel).*
# Its numbers at step 12, read from the widget:

# %%
print(f"after 12 steps: {stepper.readout['length']:.0f} tokens cached, {stepper.readout['cache_bytes'] / 1024:.1f} KiB; "
      f"pairs so far: recompute {stepper.readout['recompute_pairs']:,.0f}, cached {stepper.readout['cached_pairs']:,.0f}")
print("bytes = kv_cache_bytes(...):", stepper.readout["cache_bytes"] == kv_cache_bytes(
    config.n_layers, config.n_kv_heads, config.d_head, 17, bytes_per_element=4))

# %% [markdown]
# ## 5. Experiment: time per token as the sequence grows
#
# Time one step at a range of lengths: without the cache, a forward pass over all $t$ tokens;
# with it, one `decode_step` after a cache of $t - 1$ tokens. (Timings depend on your machine and
# on what else it runs, so this cell's numbers change from run to run.)

# %%
# NBVAL_IGNORE_OUTPUT
lengths = list(range(16, 305, 32))
sequence = torch.randint(0, config.vocab_size, (1, lengths[-1]), generator=torch.Generator().manual_seed(2))
ms_recompute, ms_cached = [], []
with torch.inference_mode():
    for t in lengths:
        ms_recompute.append(1e3 * best_seconds(lambda t=t: model(sequence[:, :t]), repeats=5))
        cache = new_cache(model, 1, capacity=t)
        prefill(model, sequence[:, : t - 1], cache)

        def one_step(cache=cache, t=t) -> None:
            decode_step(model, sequence[:, t - 1 : t], cache)
            cache.length -= 1  # forget the token again, so that every repeat is the same step

        ms_cached.append(1e3 * best_seconds(one_step, repeats=5))
print(f"at {lengths[-1]} tokens: recompute {ms_recompute[-1]:.1f} ms, cached {ms_cached[-1]:.2f} ms "
      f"per token, {ms_recompute[-1] / ms_cached[-1]:.0f}x faster")

# %%
# NBVAL_IGNORE_OUTPUT
fig, ax = plt.subplots(figsize=(6.5, 3.6))
ax.plot(lengths, ms_recompute, "o-", label="recompute all t tokens")
ax.plot(lengths, ms_cached, "o-", label="with KV cache")
ax.set_xlabel("tokens so far, t")
ax.set_ylabel("milliseconds for the next token")
ax.set_title("Measured time per generated token (random-weight decoder, 1 CPU thread)")
ax.legend()
plt.show()

# %% [markdown]
# The cached step stays almost constant; the recomputing step grows with $t$. At this tiny size a
# cached step is mostly fixed costs (Python and the dispatch of a few hundred small operations),
# which is why the measured ratio is smaller than the FLOP ratio of section 3. The gap widens with
# the model: `benchmarks/bench_kv_cache.py` measures whole generations of 256 and 512 tokens.

# %% [markdown]
# ## 6. Encoder–decoder models: the encoder's keys and values are computed once
#
# In a translation model (lesson 07) the decoder has two attentions. Its **self-attention** needs
# a cache that grows by one token per step, exactly as above. Its **cross-attention** looks at the
# encoder's output, which does not change while the decoder writes: those keys and values are
# computed once per input sentence and reused at every step, for every generated token.

# %%
cross = MultiHeadAttention(d_model=32, n_heads=4)
encoder_output = torch.randn(1, 10, 32)  # (B, S=10 source tokens, d_model)
with torch.no_grad():
    k_enc = split_heads(cross.k_proj(encoder_output), 4)  # (1, 4, 10, 8): once per sentence
    v_enc = split_heads(cross.v_proj(encoder_output), 4)
    worst = 0.0
    for _ in range(6):  # six decoder steps, each with one new query
        x_t = torch.randn(1, 1, 32)  # the decoder's hidden state at this step
        q_t = split_heads(cross.q_proj(x_t), 4)  # (1, 4, 1, 8)
        reused = cross.out_proj(merge_heads(scaled_dot_product_attention(q_t, k_enc, v_enc)))
        recomputed = cross(x_t, encoder_output)[0]  # projects the 10 encoder tokens again
        worst = max(worst, (reused - recomputed).abs().max().item())
print("reused K/V give the same outputs over 6 steps (to 1e-6):", worst < 1e-6)
print(f"encoder rows projected to K/V over 100 steps: {2 * 10} reused vs {2 * 10 * 100} recomputed")

# %% [markdown]
# ## 7. What the cache costs in memory
#
# Every layer stores a key and a value vector per key/value head per token:
#
# $$\text{bytes} = 2 \times \text{layers} \times \text{kv heads} \times d_\text{head} \times
#   \text{tokens} \times \text{bytes per number} \;(\times\ \text{batch}).$$
#
# First, the formula against the tensors our preallocated cache really holds:

# %%
cache = new_cache(model, batch_size=3, capacity=200)
real = sum(t.numel() * t.element_size() for t in cache.tensors())
formula = kv_cache_bytes(config.n_layers, config.n_kv_heads, config.d_head, 200, bytes_per_element=4, batch_size=3)
print(f"numel * element_size: {real} bytes, formula: {formula} bytes, equal: {real == formula}")

# %% [markdown]
# Now published configurations, in float16 (2 bytes), for one sequence:
#
# | model | layers | query heads | kv heads | $d_\text{head}$ | tokens |
# |---|---|---|---|---|---|
# | GPT-2 small (2019) | 12 | 12 | 12 | 64 | 1024 (its context) |
# | Llama 2 7B (MHA) | 32 | 32 | 32 | 128 | 4096 (its context) |
# | Mistral 7B (GQA) | 32 | 32 | 8 | 128 | 4096 (of its 8192+) |
# | a 7B with MQA | 32 | 32 | 1 | 128 | 4096 |

# %%
models = {  # name: (layers, kv heads, d_head, tokens)
    "GPT-2 small": (12, 12, 64, 1024),
    "Llama 2 7B (MHA)": (32, 32, 128, 4096),
    "Mistral 7B (GQA, 8 kv)": (32, 8, 128, 4096),
    "7B with MQA (1 kv)": (32, 1, 128, 4096),
}
cache_mib = {}
for name, (layers, kv_heads, d_head, n_tokens) in models.items():
    cache_mib[name] = kv_cache_bytes(layers, kv_heads, d_head, n_tokens, bytes_per_element=2) / 2**20
    per_token_kib = kv_cache_bytes(layers, kv_heads, d_head, 1, bytes_per_element=2) / 2**10
    print(f"{name:24s} {per_token_kib:6.0f} KiB per token, {cache_mib[name]:7.0f} MiB at {n_tokens} tokens, "
          f"{32 * cache_mib[name] / 1024:5.1f} GiB for a batch of 32")
weights_gib = 6.74e9 * 2 / 2**30  # Llama 2 7B: 6.74 billion parameters in float16
print(f"Llama 2 7B weights: {weights_gib:.1f} GiB; one 4096-token cache is "
      f"1/{weights_gib / (cache_mib['Llama 2 7B (MHA)'] / 1024):.1f} of that")

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.2))
ax.barh(list(cache_mib), list(cache_mib.values()), color=["tab:gray", "tab:red", "tab:orange", "tab:green"])
for row, mib in enumerate(cache_mib.values()):
    ax.text(mib, row, f" {mib:.0f} MiB", va="center")
ax.set_xscale("log")
ax.set_xlim(right=20000)
ax.invert_yaxis()
ax.set_xlabel("KV cache per sequence, MiB (float16, log scale)")
ax.set_title("KV cache per sequence from the formula (GPT-2 at 1024 tokens, 7B at 4096)")
plt.show()

# %% [markdown]
# A 7B model with full multi-head attention needs 2 GiB of cache per 4096-token sequence, about a
# sixth of its 12.6 GiB of float16 weights, and a batch of 32 such sequences needs 64 GiB, five
# times the weights. During decoding, every step reads the whole cache once, so its size sets
# the speed as well as the memory.

# %% [markdown]
# ## 8. Multi-query and grouped-query attention
#
# The cache is proportional to the number of **key/value** heads, not query heads. Multi-query
# attention (MQA, Shazeer 2019) keeps all query heads but one shared key/value head; grouped-query
# attention (GQA, Ainslie et al. 2023) shares each key/value head among a group of query heads
# (Llama 2 70B, Llama 3, Mistral: 8 kv heads). Query head $h$ uses kv head
# $\lfloor h / (\text{heads}/\text{kv heads}) \rfloor$.
#
# Our decoder takes `n_kv_heads`. Same query heads, fewer key/value heads:

# %%
print(f"{'kv heads':>8} | {'kind':4} | {'K/V projection weights':>22} | {'cache at 300 tokens':>19} | cached = recomputed")
for n_kv_heads, kind in ((4, "MHA"), (2, "GQA"), (1, "MQA")):
    torch.manual_seed(0)
    variant = Decoder(DecoderConfig(vocab_size=64, d_model=64, n_layers=2, n_heads=4, n_kv_heads=n_kv_heads,
                                    max_seq_len=320)).eval()
    kv_weights = 2 * config.d_model * n_kv_heads * config.d_head * config.n_layers
    cache_kib = kv_cache_bytes(config.n_layers, n_kv_heads, config.d_head, 300, bytes_per_element=4) / 1024
    same = torch.equal(generate(variant, prompt, 24, use_cache=False)[0], generate(variant, prompt, 24)[0])
    print(f"{n_kv_heads:>8} | {kind:4} | {kv_weights:>22} | {cache_kib:>15.0f} KiB | {same}")

# %% [markdown]
# ### Sharing without copying
#
# A smaller cache only helps if attention reads it **without copying it once per query head**.
# The obvious code views the queries as `(B, kv_heads, group, L, d)` and the keys as
# `k[:, :, None]`, `(B, kv_heads, 1, S, d)`, and lets `matmul` broadcast. But `matmul` broadcasts
# by *materialising* the expanded keys: `group` copies of the cache. `grouped_query_attention`
# folds the group into the query rows instead: the `group` query heads of one key/value head
# become `group · L` rows of one matrix, `(B, kv_heads, group·L, d)`, multiplied by that head's
# keys as they are. Measured with `largest_allocation` for one decoding step of a Llama-like layer
# (32 query heads, 4 key/value heads, $d_\text{head} = 64$, 4096 cached tokens):

# %%
n_q_heads, n_kv, n_cached, width = 32, 4, 4096, 64
q_step = torch.randn(1, n_q_heads, 1, width)  # one new token
k_cached, v_cached = (torch.randn(1, n_kv, n_cached, width) for _ in range(2))


def broadcast_gqa(q, k, v):
    """The obvious version: group axis on q, broadcast k and v over it."""
    grouped = q.reshape(1, n_kv, n_q_heads // n_kv, 1, width)  # (B, kv heads, group, L, d)
    weights = torch.softmax(grouped @ k[:, :, None].transpose(-2, -1) / width**0.5, dim=-1)
    return (weights @ v[:, :, None]).reshape(1, n_q_heads, 1, width)


k_cache_mib = k_cached.numel() * k_cached.element_size() / 2**20
folded_out, folded_bytes = largest_allocation(grouped_query_attention, q_step, k_cached, v_cached)
broadcast_out, broadcast_bytes = largest_allocation(broadcast_gqa, q_step, k_cached, v_cached)
print(f"K cache of the layer: {k_cache_mib:.0f} MiB")
print(f"largest allocation, broadcast k[:, :, None]: {broadcast_bytes / 2**20:.0f} MiB "
      f"({broadcast_bytes / 2**20 / k_cache_mib:.0f}x the K cache)")
print(f"largest allocation, group folded into rows: {folded_bytes / 2**10:.0f} KiB (the scores, 32 x 4096 floats)")
print("same output:", torch.allclose(folded_out, broadcast_out, atol=1e-6))

# %% [markdown]
# A **padding mask** for a batch, `(B, 1, 1, S)`, needs care too: against the 5-D grouped scores
# its batch axis would line up with the key/value-head axis, which goes unnoticed exactly when
# `B` equals the number of key/value heads. `grouped_query_attention` takes masks as
# `(S,)`, `(L, S)` or `(B, heads, L, S)` and refuses other shapes. With `B = 4 = kv heads`,
# against PyTorch's own grouped-query attention:

# %%
generator = torch.Generator().manual_seed(3)
q_pad = torch.randn(4, 8, 5, 16, generator=generator)  # B = 4, 8 query heads, 5 queries
k_pad, v_pad = (torch.randn(4, 4, 7, 16, generator=generator) for _ in range(2))  # 4 kv heads, 7 keys
real_keys = torch.tensor([7, 5, 3, 6])  # each sequence's real length
padding = (torch.arange(7) < real_keys[:, None])[:, None, None, :]  # (B, 1, 1, S)
expected = torch.nn.functional.scaled_dot_product_attention(q_pad, k_pad, v_pad, attn_mask=padding, enable_gqa=True)
print("matches torch's SDPA with enable_gqa:", torch.allclose(grouped_query_attention(q_pad, k_pad, v_pad, padding),
                                                             expected, atol=1e-6))

# %% [markdown]
# The trade-off: fewer key/value heads means a smaller cache, less memory traffic per step and
# larger batches, but fewer distinct "things to look up" per layer. Ainslie et al. report that
# GQA with 8 kv heads comes close to full multi-head quality while MQA loses more; a model
# can be converted after training ("uptraining" on a few percent of its original data). With
# random weights we cannot measure quality here, only the memory, which the formula gives exactly.

# %% [markdown]
# ## Your turn
#
# Open [the exercise notebook](../exercises/09_kv_cache.ipynb) and write `cached_attention_step`:
# rotate the new tokens by their positions, append their keys and values to the cache, attend
# over it with the right mask. The check cell recognises appending on the heads axis instead of
# the positions axis, a preallocated cache that is not sliced to its length, new tokens rotated
# as if they stood at position 0 (stale positions), cached keys rotated a second time, and a
# causal mask aligned top-left (or dropped) for the new queries.
#
# Before that, try here: in section 5, time a model 4× wider (`d_model=256`) and watch the ratio
# grow; or in section 8, add a line for `n_kv_heads=4` with `n_heads=8`.

# %% [markdown]
# ## Summary
#
# - Under a causal mask, earlier tokens' keys and values never change, so a decoder computes them
#   once and keeps them: each step adds one query, one key and one value per head and layer.
# - The cached step appends along the positions axis and attends with the new query's row of the
#   causal mask (all ones for a single token); with RoPE, new tokens are rotated by their real
#   positions and keys are cached already rotated.
# - Cached and recomputed decoding give the same logits (to float32 rounding) and the same tokens;
#   a step costs $O(t)$ attention instead of $O(t^2)$, which the measurement shows.
# - Encoder–decoder models compute the encoder's keys and values for cross-attention once.
# - The cache takes $2 \cdot \text{layers} \cdot \text{kv heads} \cdot d_\text{head} \cdot
#   \text{tokens} \cdot \text{bytes}$: 36 MiB for GPT-2 small, 2 GiB for a 7B MHA model at 4096
#   tokens; GQA and MQA divide it by the group size.
#
# **Next:** [lesson 10](10_sparse_attention.ipynb) makes attention itself cheaper than $O(t^2)$
# by letting each query look at only some of the keys.
