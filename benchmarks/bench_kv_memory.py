"""KV-cache memory of lesson 13's caches, measured on the tensors that hold them (CPU, float32).

1. Bytes per token, measured after filling each cache, next to the formula: MHA, GQA, MQA (lesson 09's
   formula), MLA (latent + RoPE key), and a sink + window rolling cache (constant: bytes / tokens falls).
2. Decode speed of MLA, naive (up-project the cached latents every step) vs absorbed (fold W_UK, W_UV).
3. A rolling cache generating 20 000 tokens: cache bytes and one decode step's peak allocation at 1k, 10k, 20k.
4. A batch of sequences with a shared prompt and mixed lengths: paged (one batched step, shared blocks)
   vs contiguous (a preallocated cache per sequence): memory and tokens per second, same logits.

Run: ``PYTHONPATH=. python benchmarks/bench_kv_memory.py`` (about a minute on 2 busy cores).
Timings depend on the machine and its load; compare the ratios.
"""

from __future__ import annotations

import time

import torch

from attention_course.decoder import Decoder, DecoderConfig
from attention_course.generation import decode_step, new_cache, prefill
from attention_course.kv_cache import PreallocatedKVCache, kv_cache_bytes
from attention_course.measure import best_seconds, peak_memory_bytes
from attention_course.mla import (
    LatentKVCache,
    MLAWeights,
    mla_absorbed_step,
    mla_cache_bytes,
    mla_forward,
    mla_naive_step,
)
from attention_course.paged_cache import PagedKVCache
from attention_course.rolling_cache import RollingKVCache

F32 = 4


def bytes_per_token() -> None:
    n_layers, n_heads, d_model, n_tokens = 4, 8, 256, 512
    d_head = d_model // n_heads
    print(
        f"1. Bytes per token after caching {n_tokens} tokens ({n_layers} layers, {n_heads} query heads, "
        f"d_head {d_head}, float32)"
    )
    print(f"   {'design':34s} {'measured':>10s} {'formula':>10s}")
    prompt = torch.randint(0, 64, (1, n_tokens))
    for name, n_kv in (("MHA (8 kv heads)", 8), ("GQA (2 kv heads)", 2), ("MQA (1 kv head)", 1)):
        torch.manual_seed(0)
        model = Decoder(DecoderConfig(64, d_model, n_layers, n_heads, n_kv, max_seq_len=n_tokens)).eval()
        cache = new_cache(model, 1, capacity=n_tokens)
        with torch.no_grad():
            prefill(model, prompt, cache)
        measured = cache.memory_bytes() / cache.length
        print(f"   {name:34s} {measured:10.0f} {kv_cache_bytes(n_layers, n_kv, d_head, 1, F32):10d}")
    d_latent, d_rope = 4 * d_head, d_head // 2  # DeepSeek's ratios
    weights = MLAWeights.random(d_model, n_heads, d_latent, d_head, d_rope, d_head)
    latent = LatentKVCache(n_layers, 1, n_tokens, d_latent, d_rope)
    x = torch.randn(1, n_tokens, d_model)
    for layer in range(n_layers):
        mla_forward(x, weights, latent, layer)
    latent.advance(n_tokens)
    print(
        f"   {f'MLA (latent {d_latent} + RoPE key {d_rope})':34s} {latent.memory_bytes() / latent.length:10.0f} "
        f"{mla_cache_bytes(n_layers, d_latent, d_rope, 1, F32):10d}"
    )
    n_sinks, window = 4, 124
    torch.manual_seed(0)
    model = Decoder(DecoderConfig(64, d_model, n_layers, n_heads, 2, max_seq_len=n_tokens)).eval()
    rolling = RollingKVCache(n_layers, 1, 2, d_head, n_sinks, window)
    with torch.no_grad():
        prefill(model, prompt[:, :64], rolling)
        for t in range(64, n_tokens):
            decode_step(model, prompt[:, t : t + 1], rolling)
    formula = kv_cache_bytes(n_layers, 2, d_head, n_sinks + window, F32) / n_tokens
    print(
        f"   {f'GQA-2 + {n_sinks} sinks + window {window}':34s} {rolling.memory_bytes() / rolling.length:10.0f} "
        f"{formula:10.0f}   (= GQA's {kv_cache_bytes(n_layers, 2, d_head, 1, F32)} x {n_sinks + window}/{n_tokens})"
    )


def mla_speed() -> None:
    d_model, n_heads, d_latent, d_nope, d_rope, d_v, n_cached = 512, 16, 128, 64, 32, 64, 2048
    print(
        f"\n2. MLA decode step over {n_cached} cached tokens ({n_heads} heads, latent {d_latent}, "
        f"d_nope {d_nope}, d_rope {d_rope}, d_v {d_v})"
    )
    w = MLAWeights.random(d_model, n_heads, d_latent, d_nope, d_rope, d_v, seed=1)
    x = torch.randn(1, n_cached, d_model)
    latents, k_rope = w.cache_entries(x, 0)
    q_nope, q_rope = w.queries(x[:, -1:])
    args = (q_nope, q_rope, latents, k_rope, w.w_uk, w.w_uv, w.w_o)
    diff = (mla_naive_step(*args) - mla_absorbed_step(*args)).abs().max().item()
    naive = best_seconds(lambda: mla_naive_step(*args), repeats=5)
    absorbed = best_seconds(lambda: mla_absorbed_step(*args), repeats=5)
    print(f"   naive    {1 / naive:8.0f} tok/s   (up-projects {n_heads} x {n_cached} keys and values each step)")
    print(f"   absorbed {1 / absorbed:8.0f} tok/s   speed-up {naive / absorbed:.1f}x, outputs differ by {diff:.1e}")


def rolling_memory() -> None:
    n_total, n_sinks, window = 20_000, 4, 256
    config = DecoderConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, max_seq_len=n_total + 1)
    torch.manual_seed(0)
    model = Decoder(config).eval()
    cache = RollingKVCache(1, 1, 1, config.d_head, n_sinks, window, scheme="in_cache")
    print(f"\n3. Rolling cache ({n_sinks} sinks + window {window}, 'in_cache' positions) generating {n_total} tokens")
    token = torch.tensor([[1]])
    start = time.perf_counter()
    with torch.no_grad():
        logits = prefill(model, token, cache)[:, -1]
        for step in range(2, n_total + 1):
            if step in (1_000, 10_000, 20_000):
                out: dict[str, torch.Tensor] = {}
                peak = peak_memory_bytes(
                    lambda now=logits, out=out: out.setdefault(
                        "logits", decode_step(model, now.argmax(-1, keepdim=True), cache)
                    )
                )
                logits = out["logits"]
                growing = kv_cache_bytes(1, 1, config.d_head, step, F32)
                print(
                    f"   at {step:6d} tokens: cache {cache.memory_bytes():6d} B, one step's peak allocation "
                    f"{peak:6d} B (a growing cache would hold {growing} B)"
                )
                continue
            logits = decode_step(model, logits.argmax(-1, keepdim=True), cache)
    print(f"   {n_total} tokens in {time.perf_counter() - start:.1f} s")


def paged_vs_contiguous() -> None:
    config = DecoderConfig(vocab_size=64, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=512)
    torch.manual_seed(0)
    model = Decoder(config).eval()
    gen = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, 64, (1, 96), generator=gen)
    suffix_lengths = [1, 5, 9, 17, 30, 48, 70, 120]
    n_new, block_size = 24, 16
    print(
        f"\n4. {len(suffix_lengths)} sequences sharing a {prefix.shape[1]}-token prompt, own parts of "
        f"{suffix_lengths} tokens, then {n_new} decode steps"
    )
    suffixes = [torch.randint(0, 64, (1, n), generator=gen) for n in suffix_lengths]
    steps = torch.randint(0, 64, (len(suffixes), n_new), generator=gen)
    capacity = prefix.shape[1] + max(suffix_lengths) + n_new
    with torch.no_grad():
        contiguous, logits_c = [], []
        for suffix in suffixes:  # a preallocated cache per sequence, sized for the longest
            cache = PreallocatedKVCache(config.n_layers, 1, config.n_kv_heads, capacity, config.d_head)
            prefill(model, torch.cat([prefix, suffix], dim=1), cache)
            contiguous.append(cache)
        start = time.perf_counter()
        for t in range(n_new):
            logits_c.append(
                torch.cat([decode_step(model, steps[i : i + 1, t : t + 1], c) for i, c in enumerate(contiguous)])
            )
        contiguous_s = time.perf_counter() - start
        paged = PagedKVCache(
            config.n_layers,
            n_blocks=128,
            block_size=block_size,
            n_kv_heads=config.n_kv_heads,
            d_head=config.d_head,
            max_blocks_per_seq=capacity // block_size + 1,
        )
        paged.add_sequence("prompt")
        paged.set_batch(["prompt"])
        model(prefix, cache=paged)
        for i, suffix in enumerate(suffixes):
            paged.fork("prompt", i)
            paged.set_batch([i])
            model(suffix, cache=paged)
        paged.free_sequence("prompt")
        paged.set_batch(list(range(len(suffixes))))
        start = time.perf_counter()
        logits_p = [decode_step(model, steps[:, t : t + 1], paged) for t in range(n_new)]
        paged_s = time.perf_counter() - start
    diff = max((a - b).abs().max().item() for a, b in zip(logits_c, logits_p, strict=True))
    reserved = sum(c.memory_bytes() for c in contiguous)
    filled = sum(kv_cache_bytes(config.n_layers, config.n_kv_heads, config.d_head, c.length, F32) for c in contiguous)
    tokens = len(suffixes) * n_new
    print(
        f"   contiguous: {reserved / 1024:7.1f} KiB reserved ({filled / 1024:.1f} KiB filled), "
        f"{tokens / contiguous_s:6.0f} tok/s (one sequence per step)"
    )
    print(
        f"   paged:      {paged.used_bytes() / 1024:7.1f} KiB in {paged.blocks_in_use()} blocks of {block_size}, "
        f"{tokens / paged_s:6.0f} tok/s (the whole batch per step)"
    )
    print(
        f"   memory saved: {1 - paged.used_bytes() / reserved:.0%} of the reservation, "
        f"{1 - paged.used_bytes() / filled:.0%} of the filled contiguous caches (the shared prompt is stored once); "
        f"logits differ by {diff:.1e}"
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    bytes_per_token()
    mla_speed()
    rolling_memory()
    paged_vs_contiguous()
