"""KV cache vs recomputation: tokens per second when generating 256 and 512 tokens, in one run.

    .venv/bin/python benchmarks/bench_kv_cache.py [--d-model 128 --n-layers 4 ...]

The model is attention_course.decoder.Decoder with random weights (speed does not depend on what
the weights learned): by default 4 layers, d_model 128, 4 heads of 64... see the printed config.
"Recompute" runs the whole sequence through the model for every new token; "preallocated" and
"growing" prefill the prompt once, then feed one token per step. All three pick tokens greedily
from the same model, so the tokens must be identical; the script says whether they are.

Times are wall-clock, one run each, so a busy machine adds noise: compare the ratios.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from attention_course.decoder import Decoder, DecoderConfig
from attention_course.generation import generate

MODES = {
    "recompute": {"use_cache": False},
    "preallocated": {"cache_kind": "preallocated"},
    "growing": {"cache_kind": "growing"},
}


def timed(
    model: Decoder, prompt: torch.Tensor, n_new: int, **kwargs: object
) -> tuple[float, torch.Tensor, torch.Tensor]:
    start = time.perf_counter()
    tokens, logits = generate(model, prompt, n_new, **kwargs)
    return time.perf_counter() - start, tokens, logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--n-layers", type=int, default=4)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--n-kv-heads", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=16, help="prompt length")
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512], help="tokens to generate")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: one token at a time is too little work to share, and on a "
        "busy machine a second OpenMP thread mostly waits; the same for every mode)",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = DecoderConfig(
        vocab_size=args.vocab_size,
        d_model=args.d_model,
        n_layers=args.n_layers,
        n_heads=args.n_heads,
        n_kv_heads=args.n_kv_heads,
        max_seq_len=args.prompt + max(args.lengths),
    )
    model = Decoder(config).eval()
    n_params = sum(p.numel() for p in model.parameters())
    prompt = torch.randint(0, args.vocab_size, (1, args.prompt), generator=torch.Generator().manual_seed(1))
    print(f"model: Decoder({config}), {n_params / 1e6:.2f} M parameters, random weights, float32, batch 1")
    print(
        f"prompt {args.prompt} tokens, greedy decoding; torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    for kwargs in MODES.values():  # warm-up: first calls allocate and pick kernels
        generate(model, prompt, 8, **kwargs)

    header = (
        f"{'new tokens':>10} | {'recompute tok/s':>15} | {'preallocated tok/s':>18} | {'speed-up':>8} | "
        f"{'growing tok/s':>13} | {'speed-up':>8} | identical tokens | max |logit diff|"
    )
    print(header)
    print("-" * len(header))
    for n_new in args.lengths:
        results = {name: timed(model, prompt, n_new, **kwargs) for name, kwargs in MODES.items()}
        base_time, base_tokens, base_logits = results["recompute"]
        identical = all(torch.equal(tokens, base_tokens) for _, tokens, _ in results.values())
        worst = max(float((logits - base_logits).abs().max()) for _, _, logits in results.values())
        rate = {name: n_new / seconds for name, (seconds, _, _) in results.items()}
        print(
            f"{n_new:>10} | {rate['recompute']:>15.1f} | {rate['preallocated']:>18.1f} | "
            f"{base_time / results['preallocated'][0]:>7.1f}x | {rate['growing']:>13.1f} | "
            f"{base_time / results['growing'][0]:>7.1f}x | {'yes' if identical else 'NO':>16} | {worst:.1e}"
        )


if __name__ == "__main__":
    main()
