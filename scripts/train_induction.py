"""Train lesson 14's small decoder until it has induction heads, and ship its weights.

    PYTHONPATH=. .venv/bin/python scripts/train_induction.py      (or: make induction-weights)

Seeded and single-threaded, so a rerun on the same machine gives the same weights. Writes
``attention_course/data/induction_decoder.safetensors`` (the weights, about 130 KB) and
``attention_course/data/induction_training_log.json`` (the loss every 25 steps, the seconds it
took, and the heads' scores and ablation effects on held-out sequences, which
``tests/test_heads.py`` checks the shipped weights against).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from attention_course.decoder import Decoder
from attention_course.heads import (
    INDUCTION_CONFIG,
    WEIGHTS,
    ablate_heads,
    attention_weights,
    copying_loss,
    induction_score,
    previous_token_score,
    repeated_sequences,
    train_induction,
)

HELD_OUT_SEED, HELD_OUT_PERIOD = 1234, 13  # evaluation sequences the training never drew


def evaluate(model: Decoder) -> dict[str, object]:
    """Scores per (layer, head) and the repeated-half loss with each head ablated, on held-out sequences."""
    tokens = repeated_sequences(
        256, HELD_OUT_PERIOD, INDUCTION_CONFIG.vocab_size, torch.Generator().manual_seed(HELD_OUT_SEED)
    )
    attention = attention_weights(model, tokens)
    first, repeated = copying_loss(model, tokens, HELD_OUT_PERIOD)
    ablated = {}
    for layer in range(INDUCTION_CONFIG.n_layers):
        for head in range(INDUCTION_CONFIG.n_heads):
            with ablate_heads(model, [(layer, head)]):
                ablated[f"{layer},{head}"] = round(copying_loss(model, tokens, HELD_OUT_PERIOD)[1], 4)
    return {
        "held_out": {"sequences": 256, "period": HELD_OUT_PERIOD, "seed": HELD_OUT_SEED},
        "previous_token_score": [[round(s, 4) for s in previous_token_score(a).tolist()] for a in attention],
        "induction_score": [
            [round(s, 4) for s in induction_score(a, tokens, HELD_OUT_PERIOD).tolist()] for a in attention
        ],
        "loss_first_copy": round(first, 4),
        "loss_repeated_copy": round(repeated, 4),
        "loss_repeated_copy_with_head_ablated": ablated,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = Decoder(INDUCTION_CONFIG)
    start = time.perf_counter()
    log = train_induction(
        model,
        args.steps,
        seed=args.seed,
        on_log=lambda step, copy, other: print(
            f"step {step:5d}  loss on copyable tokens {copy:.3f}  on the others {other:.3f}", flush=True
        ),
    )
    seconds = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: t.contiguous() for name, t in model.state_dict().items()}, str(args.out))
    report = {
        "config": INDUCTION_CONFIG.__dict__,
        "steps": args.steps,
        "seed": args.seed,
        "train_seconds": round(seconds, 1),
        "threads": 1,
        "log": {
            "step": log.steps,
            "copy_loss": [round(x, 4) for x in log.copy_loss],
            "other_loss": [round(x, 4) for x in log.other_loss],
        },
        **evaluate(model),
    }
    log_path = args.out.with_name("induction_training_log.json")
    log_path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"trained {args.steps} steps in {seconds:.1f} s; wrote {args.out} and {log_path}")
    print(json.dumps({k: v for k, v in report.items() if k not in ("log", "config")}, indent=1))


if __name__ == "__main__":
    main()
