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
# # 13 · Attention in today's LLMs: latent, rolling and paged KV caches, and FlexAttention
#
# **You will be able to**
# 1. size the KV cache of real models (Llama 3, Mistral, Gemma, DeepSeek-V3) per token, for
#    multi-head, grouped-query, multi-query and latent attention and for a sliding window;
# 2. cache one small latent per token (DeepSeek's multi-head latent attention, MLA) and decode
#    either by up-projecting it or by folding the up-projections into the query and the output;
# 3. keep a cache of constant size with a rolling buffer of "sink" tokens plus a window, under
#    both ways of giving the cached keys their positions;
# 4. store caches in fixed-size blocks with a block table per sequence, and share a common prompt
#    between sequences with copy-on-write;
# 5. write the sparse patterns of lesson 10 as FlexAttention `mask_mod` / `score_mod` functions.
#
# **Builds on:** [lesson 06](06_multi_head_attention.ipynb) (the low-rank value map of each head),
# [lesson 08](08_positional_encodings.ipynb) (RoPE), [lesson 09](09_kv_cache.ipynb) (the KV cache
# and its memory formula) and [lesson 10](10_sparse_attention.ipynb) (sliding windows and patterns).
#
# Every cache in this lesson is checked against recomputing attention from scratch, and every
# memory claim is measured on the tensors that hold it.

# %%
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from attention_course import scaled_dot_product_attention
from attention_course.decoder import Decoder, DecoderConfig
from attention_course.flex import (
    flex,
    flex_pattern_attention,
    pattern_block_mask,
    sink_window_pattern,
    soft_cap_score_mod,
)
from attention_course.generation import decode_step, new_cache, prefill
from attention_course.kv_cache import kv_cache_bytes
from attention_course.mla import LatentKVCache, MLAWeights, mla_absorbed_step, mla_cache_bytes, mla_naive_step
from attention_course.paged_cache import PagedKVCache
from attention_course.positional import apply_rope
from attention_course.rolling_cache import (
    RollingKVCache,
    chronological_slots,
    ring_slot,
    rolling_attention_step,
    rolling_reference,
    sink_window_mask,
)
from attention_course.sparse import bigbird_pattern, dilated_window_pattern, longformer_pattern, strided_pattern
from attention_course.teaching.widgets import draw_rolling_buffer, rolling_buffer_explorer

_ = torch.manual_seed(0)  # every random number below is the same on every run
torch.set_num_threads(1)  # one token at a time is many tiny operations: a second thread only adds waiting

# %% [markdown]
# ## 1. The bill: bytes per token of real models
#
# Lesson 09's formula: a cache holds, for every layer, one key and one value per key/value head,
#
# $$\text{bytes per token} = 2 \times \text{layers} \times \text{kv heads} \times d_\text{head}
#   \times \text{bytes per number}.$$
#
# Here are the published configurations (the `config.json` each model ships with, and the
# DeepSeek-V3 technical report) of five well-known models, in bfloat16 (2 bytes per number):
#
# | model | layers | query heads | kv heads | $d_\text{head}$ | attention |
# |---|---|---|---|---|---|
# | Llama-3-8B | 32 | 32 | 8 | 128 | GQA |
# | Llama-3-70B | 80 | 64 | 8 | 128 | GQA |
# | Mistral-7B (v0.1) | 32 | 32 | 8 | 128 | GQA + sliding window of 4096 |
# | Gemma-7B | 28 | 16 | 16 | 256 | MHA |
# | Gemma-2B | 18 | 8 | 1 | 256 | MQA |
# | DeepSeek-V3 | 61 | 128 | latent $d_c = 512$ + RoPE key $d_R = 64$ | 128 (+64) | MLA |

# %%
CONFIGS = {  # name: (layers, query heads, kv heads, d_head), as published
    "Llama-3-8B": (32, 32, 8, 128),
    "Llama-3-70B": (80, 64, 8, 128),
    "Mistral-7B": (32, 32, 8, 128),
    "Gemma-7B": (28, 16, 16, 256),
    "Gemma-2B": (18, 8, 1, 256),
}
BF16 = 2
per_token = {name: kv_cache_bytes(layers, kv, d, 1, BF16) for name, (layers, _, kv, d) in CONFIGS.items()}
per_token["DeepSeek-V3 (MLA)"] = mla_cache_bytes(61, 512, 64, 1, BF16)
for name, nbytes in per_token.items():
    print(f"{name:18s} {nbytes / 1024:7.1f} KiB per token   {nbytes * 32768 / 2**30:6.2f} GiB for 32k tokens")

# %% [markdown]
# What would each model's cache cost under the other designs? Keep its layers and head width and
# change only what is cached per token and layer: $2 H d$ numbers for MHA, $2 H_{kv} d$ for GQA,
# $2d$ for MQA, $d_c + d_R$ for MLA (DeepSeek's ratio $d_c = 4 d_\text{head}$, $d_R = d_\text{head}/2$),
# and for a sliding window of $W$ tokens the total stops growing at $W$ tokens.

# %%
def bytes_per_token(layers: int, heads: int, kv_heads: int, d_head: int, design: str) -> int:
    """Cache bytes per token in bfloat16 for one attention design, from a model's published shape."""
    if design == "MLA":
        return mla_cache_bytes(layers, 4 * d_head, d_head // 2, 1, BF16)
    n_kv = {"MHA": heads, "GQA": kv_heads, "MQA": 1}[design]
    return kv_cache_bytes(layers, n_kv, d_head, 1, BF16)


DESIGNS = ["MHA", "GQA", "MQA", "MLA"]
print(f"{'KiB per token':14s}" + "".join(f"{d:>8s}" for d in DESIGNS))
for name, shape in CONFIGS.items():
    print(f"{name:14s}" + "".join(f"{bytes_per_token(*shape, d) / 1024:8.0f}" for d in DESIGNS))
window, context = 4096, 32768
mistral = bytes_per_token(*CONFIGS["Mistral-7B"], "GQA")
print(f"Mistral-7B at {context} tokens: {mistral * context / 2**30:.1f} GiB growing, "
      f"{mistral * window / 2**30:.1f} GiB with its window of {window} ({context // window}x less)")

# %%
fig, ax = plt.subplots(figsize=(7, 3.6))
width = 0.2
for i, design in enumerate(DESIGNS):
    values = [bytes_per_token(*shape, design) / 1024 for shape in CONFIGS.values()]
    ax.bar([x + (i - 1.5) * width for x in range(len(CONFIGS))], values, width, label=design)
ax.set_xticks(range(len(CONFIGS)), list(CONFIGS))
ax.set_yscale("log")
ax.set_ylabel("KiB per token (bfloat16, log)")
ax.set_xlabel("model (its layers and d_head, each attention design)")
ax.set_title("KV cache per token: the same model shapes under four designs")
ax.legend(ncols=4, fontsize=8)
plt.show()

# %% [markdown]
# MQA is the smallest but shares one key/value head between all query heads, which costs quality;
# GQA is the usual compromise. MLA, at DeepSeek's ratios, caches a quarter or less of what GQA
# caches for the Llama and Mistral shapes, about twice MQA, while every head still gets its own
# keys and values (for Gemma-2B, already MQA, it would cache more). The rest of the lesson builds
# each of these caches and checks it.

# %% [markdown]
# ## 2. Multi-head latent attention (MLA)
#
# ### Intuition: lesson 06's low-rank value map, shared by all heads
#
# In lesson 06 each head's value path $W_V^{(i)} W_O^{(i)}$ went "down" to $d_\text{head}$ and
# back "up", so it had rank at most $d_\text{head}$. MLA makes the "down" step **one** matrix for
# all heads, $c_t = x_t W_\text{down}$ of width $d_c$, and caches $c_t$. Each head's keys and
# values are then up-projections of the same latent:
#
# $$k^C_{t,h} = c_t W^{UK}_h, \qquad v_{t,h} = c_t W^{UV}_h .$$
#
# RoPE does not survive that factorisation (the rotation depends on the position and sits between
# the query and $W^{UK}$), so positions go into a small **decoupled** key $k^R_t = \mathrm{RoPE}(x_t W^{KR})$
# shared by all heads and cached as it is. The score adds both parts:
#
# $$s_{t,h} = \frac{q^C_h \cdot k^C_{t,h} + q^R_h \cdot k^R_t}{\sqrt{d_C + d_R}}.$$
#
# ### Folding the up-projections away ("absorbed" decoding)
#
# $q^C_h \cdot (c_t W^{UK}_h) = (q^C_h W^{UK\top}_h) \cdot c_t$: move $W^{UK}_h$ onto the query
# once per step, and every head scores the cached latents directly. Likewise
# $\sum_t a_{t,h} (c_t W^{UV}_h) W^O_h = \big(\sum_t a_{t,h} c_t\big) (W^{UV}_h W^O_h)$: mix the latents,
# then one matrix to the output. Decoding never builds per-head keys or values.

# %%
d_model, n_heads, d_latent, d_nope, d_rope, d_v = 64, 8, 32, 16, 8, 16
w = MLAWeights.random(d_model, n_heads, d_latent, d_nope, d_rope, d_v, seed=0)
x = torch.randn(2, 12, d_model)  # (B, N, d_model)

q_nope, q_rope = w.queries(x)  # (B, H, N, d_nope), (B, H, N, d_rope): not rotated yet
latents, k_rope = w.cache_entries(x, start=0)  # what the cache stores: (B, N, d_latent), (B, N, d_rope)
print("cached per token:", latents.shape[-1] + k_rope.shape[-1], "numbers; MHA with these heads would cache",
      2 * n_heads * d_nope, "(keys and values of", n_heads, "heads)")

args = (q_nope, q_rope, latents, k_rope, w.w_uk, w.w_uv, w.w_o)
naive, absorbed = mla_naive_step(*args), mla_absorbed_step(*args)  # all 12 tokens as new: a causal prefill
keys, values = w.up_projected(latents, k_rope)  # ordinary per-head K, V rebuilt from the cache
q = torch.cat([q_nope, apply_rope(q_rope)], dim=-1)
plain = torch.einsum("bhtv,hvd->btd", F.scaled_dot_product_attention(q, keys, values, is_causal=True), w.w_o)
print(f"naive vs absorbed: max diff {(naive - absorbed).abs().max():.1e};  "
      f"vs PyTorch attention on the rebuilt K, V: {(naive - plain).abs().max():.1e}")

# %% [markdown]
# The same holds token by token through a cache that stores only latents. Decoding 12 tokens one
# at a time with `LatentKVCache`, the cache's tensors take exactly the formula's bytes:

# %%
cache = LatentKVCache(n_layers=1, batch_size=2, capacity=12, d_latent=d_latent, d_rope=d_rope)
steps = []
for t in range(12):
    q_nope_t, q_rope_t = w.queries(x[:, t : t + 1])
    lat, kr = cache.append(0, *w.cache_entries(x[:, t : t + 1], cache.length))
    steps.append(mla_absorbed_step(q_nope_t, q_rope_t, lat, kr, w.w_uk, w.w_uv, w.w_o))
    cache.advance(1)
print(f"cached decode vs all-at-once: max diff {(torch.cat(steps, dim=1) - naive).abs().max():.1e}")
print("cache bytes:", cache.memory_bytes(), "= formula", mla_cache_bytes(1, d_latent, d_rope, 12, 4, batch_size=2))

# %% [markdown]
# ### The value path, as in lesson 06
#
# Each head's value map $W_\text{down} W^{UV}_h W^O_h$ still has rank at most $d_v$, as in
# lesson 06. What is new: all heads' maps start with the same $W_\text{down}$, so **together**
# they have rank at most $d_c$. Stacking the eight heads' maps side by side:

# %%
value_maps = [w.w_down @ w.w_uv[h] @ w.w_o[h] for h in range(n_heads)]  # each (d_model, d_model)
print("rank of one head's value map:", int(torch.linalg.matrix_rank(value_maps[0])), f"(<= d_v = {d_v})")
print("rank of all heads' maps side by side:", int(torch.linalg.matrix_rank(torch.cat(value_maps, dim=1))),
      f"(<= d_c = {d_latent}; ordinary heads would reach {min(d_model, n_heads * d_v)})")

# %%
fig, ax = plt.subplots(figsize=(6.5, 3))
widths = {"MHA: keys + values\nof 8 heads": 2 * n_heads * d_nope, "GQA, 2 kv heads": 2 * 2 * d_nope,
          "MQA": 2 * d_nope, "MLA: latent +\nRoPE key": d_latent + d_rope}
ax.barh(list(widths), list(widths.values()), color=["#999", "#999", "#999", "#f4a259"])
for i, value in enumerate(widths.values()):
    ax.text(value + 2, i, str(value), va="center")
ax.set_xlabel("numbers cached per token and layer")
ax.set_title("What one token leaves in the cache (this section's small model)")
ax.invert_yaxis()
plt.show()

# %% [markdown]
# ## 3. A rolling buffer: attention sinks plus a sliding window
#
# Mistral attends only to the last $W$ tokens, so its cache needs only $W$ slots: token $p$
# overwrites the token that just left the window. StreamingLLM observed that models pour a lot of
# attention onto the first few tokens ("attention sinks") and break when those are evicted, so it
# also keeps the first $S$ tokens forever. Query $i$ may see key $j$ when
#
# $$j \le i \quad\text{and}\quad (j < S \ \text{ or } \ i - j < W),$$
#
# and token $p$ lives in slot $p$ if $p < S$, else in slot $S + (p - S) \bmod W$. Below: the
# buffer of 2 sinks + 5 window slots as it wraps (row = after writing token $t$; red = written now).

# %%
n_sinks, window = 2, 5
print("slots of tokens 0..13:", [ring_slot(p, n_sinks, window) for p in range(14)])
fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), width_ratios=[1.3, 1])
draw_rolling_buffer(left, 13, n_sinks, window)
right.imshow(sink_window_mask(14, n_sinks, window).numpy(), cmap="Blues")
right.set_xlabel("key token j")
right.set_ylabel("query token i")
right.set_title("The same thing as a dense mask (blue = may attend)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Two ways to give the cached keys their positions
#
# * **absolute** (Mistral's rolling buffer): rotate each key by RoPE at its token's position
#   when it is written, the query at its own. Attention only ever sees distances $i - j$, so the
#   order of the slots does not matter. But the sinks drift ever further away: at token 20 000
#   the sink sits at distance 20 000, a distance the model may never have seen in training.
# * **in_cache** (StreamingLLM): cache keys **before** rotation. At each step, put the cached
#   keys in token order, rotate them at positions $0, 1, \dots, n-1$ (their place in the cache)
#   and the query at $n-1$. No distance ever exceeds the cache size. After a wrap the slots are
#   **not** in token order, so they must be sorted first:

# %%
for p in (6, 7, 9):
    print(f"after token {p}: slots in token order {chronological_slots(p, n_sinks, window).tolist()}")

# %% [markdown]
# `rolling_attention_step` writes the new token into its slot and attends; `rolling_reference`
# computes the same outputs densely from the whole sequence, with the mask above and the same
# position scheme, row by row. Run 60 tokens (more than eight wraps) through a buffer of 7 and
# compare at every step:

# %%
n_tokens = 60
q_all, k_all, v_all = torch.randn(1, 4, n_tokens, 16), torch.randn(1, 2, n_tokens, 16), torch.randn(1, 2, n_tokens, 16)
for scheme in ("absolute", "in_cache"):
    expected = rolling_reference(q_all, k_all, v_all, n_sinks, window, scheme)
    k_cache = v_cache = torch.zeros(1, 2, n_sinks + window, 16)
    worst = 0.0
    for p in range(n_tokens):
        out, k_cache, v_cache = rolling_attention_step(q_all[:, :, p : p + 1], k_all[:, :, p : p + 1],
                                                       v_all[:, :, p : p + 1], k_cache, v_cache, p, n_sinks, scheme)
        worst = max(worst, (out - expected[:, :, p : p + 1]).abs().max().item())
    print(f"{scheme:8s}: {n_tokens} steps, buffer {tuple(k_cache.shape)}, worst difference from dense "
          f"< 1e-5: {worst < 1e-5}")
differ = (rolling_reference(q_all, k_all, v_all, n_sinks, window, "absolute")
          - rolling_reference(q_all, k_all, v_all, n_sinks, window, "in_cache")).abs().amax(dim=(0, 1, 3))
print("the two schemes agree until the buffer is full:", bool(differ[: n_sinks + window].max() < 1e-5),
      "| differ after it:", bool(differ[n_sinks + window :].min() > 1e-4))

# %% [markdown]
# ### Play: step the buffer
#
# Move the slider: watch where each token goes, which token it evicts, and the order in which the
# `in_cache` scheme reads the slots.

# %%
# NBVAL_IGNORE_OUTPUT
rolling_buffer_explorer(n_sinks=2, window=5, n_tokens=30)

# %% [markdown]
# ![The rolling buffer after token 12: two sink slots, five window slots, token 12 written into slot 2](figures/13_rolling_buffer.png)
#
# *(A still of the widget after token 12, for readers without a live kernel.)*

# %% [markdown]
# ### Generating far past the buffer at constant memory
#
# `RollingKVCache` plugs into lesson 09's decoder like any other cache. Its memory is fixed when
# it is created; generating more tokens never grows it:

# %%
config = DecoderConfig(vocab_size=64, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=100_000)
model = Decoder(config).eval()
rolling = RollingKVCache(config.n_layers, 1, config.n_kv_heads, config.d_head, n_sinks=4, window=60,
                         scheme="in_cache")
with torch.no_grad():
    logits = prefill(model, torch.tensor([[1, 2, 3, 4, 5]]), rolling)[:, -1]
    for step in range(1, 601):
        logits = decode_step(model, logits.argmax(-1, keepdim=True), rolling)
        if step in (10, 100, 600):
            print(f"{rolling.length:4d} tokens: cache {rolling.memory_bytes()} bytes")
growing = kv_cache_bytes(config.n_layers, config.n_kv_heads, config.d_head, rolling.length, bytes_per_element=4)
print(f"a growing cache would hold {growing} bytes by now ({growing / rolling.memory_bytes():.1f}x)")

# %% [markdown]
# ## 4. A paged cache: blocks, block tables, and a shared prompt
#
# A contiguous cache reserves `capacity` positions per sequence up front. When a server decodes
# many sequences of different lengths, most of that space is empty, and two requests with the
# same system prompt each hold a copy of it. vLLM's **PagedAttention** stores the cache like an
# operating system stores memory pages:
#
# * one **pool** of blocks of $b$ positions, shared by all sequences;
# * per sequence a **block table**: token $t$ is at block $\text{table}[\lfloor t/b \rfloor]$,
#   offset $t \bmod b$;
# * blocks come from a free list as a sequence grows and go back when it ends;
# * sequences that start with the same prompt **share** its blocks (a reference count per block);
#   a sequence about to write into a shared block copies it first (**copy-on-write**).
#
# Three requests share a 7-token prompt and then go their own ways (blocks of 4 positions):

# %%
paged = PagedKVCache(config.n_layers, n_blocks=16, block_size=4, n_kv_heads=config.n_kv_heads,
                     d_head=config.d_head, max_blocks_per_seq=8)
prompt = torch.tensor([[7, 3, 9, 1, 4, 4, 2]])  # the shared system prompt
own = [torch.tensor([[5, 6]]), torch.tensor([[8, 8, 8, 8, 8]]), torch.tensor([[2]])]
with torch.no_grad():
    paged.add_sequence("prompt")
    paged.set_batch(["prompt"])
    model(prompt, cache=paged)
    for i, tokens in enumerate(own):
        paged.fork("prompt", f"request {i}")  # shares the prompt's blocks: nothing is copied
        paged.set_batch([f"request {i}"])
        model(tokens, cache=paged)  # writing into the shared, partly filled block copies it first
    paged.free_sequence("prompt")
for seq_id, table in paged.tables.items():
    print(f"{seq_id}: {paged.lengths[seq_id]:2d} tokens, block table {table}")
print("reference counts of blocks 0-8:", paged.ref_counts[:9].tolist())

# %%
def draw_block_tables(cache: PagedKVCache, ax: plt.Axes) -> None:
    """The pool as a row of blocks, coloured by which sequences use them; arrows from each table."""
    colours = ["#8cb8e0", "#f4a259", "#9bd49b"]
    for block in range(cache.k_pool.shape[1]):
        users = [i for i, table in enumerate(cache.tables.values()) if block in table]
        colour = "#cccccc" if len(users) > 1 else (colours[users[0]] if users else "#f2f2f2")
        ax.add_patch(plt.Rectangle((block, 0), 1, 1, facecolor=colour, edgecolor="white"))
        ax.text(block + 0.5, 0.5, str(block), ha="center", va="center", fontsize=9)
    for row, (seq_id, table) in enumerate(cache.tables.items()):
        y = 1.6 + row
        ax.text(-0.3, y + 0.4, f"{seq_id} ({cache.lengths[seq_id]} tokens)", ha="right", va="center", fontsize=9)
        for b, block in enumerate(table):
            ax.add_patch(plt.Rectangle((b, y), 1, 0.8, facecolor=colours[row], edgecolor="white"))
            ax.text(b + 0.5, y + 0.4, str(block), ha="center", va="center", fontsize=9)
            ax.annotate("", xy=(block + 0.5, 1.0), xytext=(b + 0.5, y), arrowprops={"arrowstyle": "->", "alpha": 0.4})
    ax.set_xlim(-4.5, cache.k_pool.shape[1])
    ax.set_ylim(1.6 + len(cache.tables), -0.2)
    ax.set_yticks([0.5], ["pool"])
    ax.set_xticks([])
    ax.set_xlabel("top: the pool's blocks (grey = shared by several requests);  below: each request's block table")
    ax.set_title(f"Paged cache: blocks of {cache.block_size} positions, the prompt's full block shared")


fig, ax = plt.subplots(figsize=(10, 3.4))
draw_block_tables(paged, ax)
plt.show()

# %% [markdown]
# The first prompt block (tokens 0-3) is full, so all three requests point at it. The second
# (tokens 4-6) was only partly filled: each request copied it before writing its first own token
# (position 7) into it, so the block the prompt wrote is unchanged for the others.
# Now decode the three requests **together**, although they hold 9, 12 and 8 tokens, and check each
# against decoding it alone with an ordinary contiguous cache:

# %%
with torch.no_grad():
    paged.set_batch(["request 0", "request 1", "request 2"])
    continuation = torch.randint(0, 64, (3, 6))
    batched = torch.stack([model(continuation[:, t : t + 1], cache=paged)[:, -1] for t in range(6)], dim=1)
    worst = 0.0
    for i in range(3):
        alone = new_cache(model, 1)
        prefill(model, torch.cat([prompt, own[i]], dim=1), alone)
        rows = [decode_step(model, continuation[i : i + 1, t : t + 1], alone) for t in range(6)]
        worst = max(worst, (torch.cat(rows) - batched[i]).abs().max().item())
print(f"paged batch vs contiguous, one at a time: identical to 1e-5: {worst < 1e-5}")
contiguous = 3 * kv_cache_bytes(config.n_layers, config.n_kv_heads, config.d_head, 64, bytes_per_element=4)
print(f"blocks in use {paged.blocks_in_use()}: {paged.used_bytes()} bytes; three contiguous caches "
      f"reserved for 64 tokens each: {contiguous} bytes")

# %% [markdown]
# ## 5. FlexAttention: masks and biases as small functions
#
# Lesson 10 wrote each sparse pattern as a predicate `allows(i, j)`. PyTorch's FlexAttention takes
# exactly such functions: a `mask_mod(b, h, q_idx, kv_idx)` (may this pair attend?) and a
# `score_mod(score, b, h, q_idx, kv_idx)` (change a score: a bias, a cap, or $-\infty$). From a
# `mask_mod`, `create_block_mask` finds the tiles that hold any allowed pair, the `layout` of
# lesson 10. In symbols, with $m$ the `mask_mod` and $f$ the `score_mod`,
#
# $$o_i = \sum_{j \,:\, m(i, j)} \frac{\exp f(s_{ij}, i, j)}{\sum_{j' : m(i, j')} \exp f(s_{ij'}, i, j')}\, v_j,
#   \qquad s_{ij} = \frac{q_i \cdot k_j}{\sqrt{d}},$$
#
# and a kernel only visits the tiles where some $m(i, j)$ is true. Every lesson-10 pattern, through
# FlexAttention, against the course's dense masked attention:

# %%
n = 64
qf, kf, vf = (torch.randn(1, 2, n, 16) for _ in range(3))
patterns = [dilated_window_pattern(n, 3, 2, causal=True), strided_pattern(n, 8),
            longformer_pattern(n, 3, [0, 32]), bigbird_pattern(n, 3, [0], 2, 16), sink_window_pattern(n, 4, 8)]
for pattern in patterns:
    dense = scaled_dot_product_attention(qf, kf, vf, pattern.mask())
    block_mask = pattern_block_mask(pattern, block_size=16)  # from the mask_mod: which 16 x 16 tiles to visit
    out = flex(qf, kf, vf, block_mask=block_mask)
    print(f"{pattern.name:28s} equal to 1e-5: {bool((out - dense).abs().max() < 1e-5)}  "
          f"tiles visited: {block_mask.to_dense().sum().item()} of {(n // 16) ** 2}")
as_score_mod = flex_pattern_attention(qf, kf, vf, patterns[0], use_block_mask=False)  # -inf instead of a mask
print("the first pattern as a score_mod, equal to 1e-5:",
      bool((as_score_mod - scaled_dot_product_attention(qf, kf, vf, patterns[0].mask())).abs().max() < 1e-5))

# %%
pattern = patterns[2]  # Longformer: a window plus two global tokens
visited = pattern_block_mask(pattern, block_size=16).to_dense()[0, 0]  # (4, 4) tiles
fig, ax = plt.subplots(figsize=(4.6, 4.2))
ax.imshow(pattern.mask().numpy(), cmap="Blues")
for row in range(visited.shape[0]):
    for col in range(visited.shape[1]):
        if not visited[row, col]:
            ax.add_patch(plt.Rectangle((col * 16 - 0.5, row * 16 - 0.5), 16, 16, facecolor="none", hatch="xx",
                                       edgecolor="#bbbbbb"))
ax.set_xlabel("key position j")
ax.set_ylabel("query position i")
ax.set_title(f"{pattern.name}: mask_mod (blue),\ntiles the block mask skips (hatched)")
plt.show()

# %% [markdown]
# A `score_mod` changes scores instead of hiding them, e.g. Gemma 2's soft cap
# $s \mapsto c \tanh(s / c)$:

# %%
scores = qf @ kf.transpose(-2, -1) / math.sqrt(16)
capped = torch.softmax(5.0 * torch.tanh(scores / 5.0), dim=-1) @ vf
print("soft cap as a score_mod, equal to 1e-5:", bool((flex(qf, kf, vf, score_mod=soft_cap_score_mod(5.0)) - capped)
                                                      .abs().max() < 1e-5))

# %% [markdown]
# **Eager versus compiled.** Called as above, `flex_attention` runs its reference path: it
# evaluates the functions over the whole score matrix with `torch.vmap`, so it checks values but
# builds the $N \times N$ scores and skips nothing. `torch.compile(flex_attention)` turns the same
# functions into one fused kernel (Triton on a GPU, C++ on a CPU) that skips the empty tiles and
# never stores the scores. On this course's CPU machine the compiled form works, but its first call
# compiled for about a minute, too long for a lesson; `attention_course.flex.flex(..., compiled=True)`
# runs it if you want to try.

# %% [markdown]
# ## Your turn
#
# Open [`../exercises/13_modern_kv_caches.ipynb`](../exercises/13_modern_kv_caches.ipynb) and write:
# 1. `rolling_attention_step`: write the new token into the right slot of a sink + window buffer
#    and attend, under both position schemes;
# 2. `paged_write_and_gather`: store a token through a block table (copying a shared block first)
#    and read a sequence back in order;
# 3. `mla_absorbed_step`: one MLA decode step with the up-projections folded into the query and
#    the output.
#
# ## Summary
# - Cache bytes per token are $2 \cdot \text{layers} \cdot \text{kv heads} \cdot d_\text{head} \cdot
#   \text{bytes}$; GQA and MQA shrink the kv heads, MLA caches a latent of $d_c + d_R$ numbers for
#   all heads, and a sliding window caps the number of tokens.
# - MLA's up-projections fold into the query and the output, so decoding attends over latents;
#   RoPE is kept in a separate small key because a rotation cannot be folded.
# - A rolling buffer of sinks + window holds constant memory forever. Keys rotated at absolute
#   positions don't care about slot order; keys re-positioned inside the cache must be read in token order.
# - A paged cache allocates fixed-size blocks on demand, addresses them through a block table and
#   shares common prompts by reference counting and copy-on-write; decoding through it gives the
#   same tokens as a contiguous cache.
# - FlexAttention expresses lesson 10's patterns as `mask_mod`s; compiled, it skips the empty tiles.
#
# **Next:** lesson 14 trains a small decoder and looks at what its heads learn.
