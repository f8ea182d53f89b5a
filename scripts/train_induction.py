"""Train lesson 14's small decoder until it has an induction head, and ship its weights.

    PYTHONPATH=. .venv/bin/python scripts/train_induction.py      (or: make induction-weights)
    PYTHONPATH=. .venv/bin/python scripts/train_induction.py --seed 3            (another seed)
    PYTHONPATH=. .venv/bin/python scripts/train_induction.py --sweep 0 1 2 3 4 5  (the seed sweep)

Seeded and single-threaded, so a rerun on the same machine gives the same weights. Trains
``INDUCTION_STEPS`` (3000) steps of AdamW with weight decay ``INDUCTION_WEIGHT_DECAY`` (0.5, strong:
with the usual 0.01 both layer-1 heads learn the same induction job, with 0.5 one head takes it
over; see ``attention_course/heads.py``). Writes ``attention_course/data/induction_decoder.safetensors``
(the weights, about 230 KB) and ``attention_course/data/induction_training_log.json`` (the loss every
25 steps, the seconds it took, and the heads' scores and ablation effects on held-out sequences,
which ``tests/test_heads.py`` checks the shipped weights against).

``--sweep SEED ...`` writes no weights: it trains each seed with each of ``--sweep-weight-decays``
(default 0.01 and 0.5), evaluates every run on the held-out sequences every 1000 steps, and writes
``attention_course/data/induction_seed_sweep.json`` (lesson 14 prints its table).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from attention_course.decoder import Decoder
from attention_course.heads import (
    INDUCTION_CONFIG,
    INDUCTION_STEPS,
    INDUCTION_WEIGHT_DECAY,
    WEIGHTS,
    TrainingLog,
    ablate_heads,
    attention_weights,
    copying_loss,
    induction_score,
    previous_token_score,
    repeated_sequences,
    train_induction,
)

HELD_OUT_SEED, HELD_OUT_PERIOD = 1234, 13  # evaluation sequences the training never drew
# A run "has one dominant induction head" when its best layer-1 head's induction score is at least this
# many times every other head's (tests/test_heads.py asks more of the shipped weights).
DOMINANCE_RATIO = 3.0
SWEEP = WEIGHTS.with_name("induction_seed_sweep.json")


def evaluate(model: Decoder) -> dict[str, object]:
    """Scores per (layer, head) and the repeated-half loss with each head ablated, on held-out sequences."""
    tokens = repeated_sequences(
        256, HELD_OUT_PERIOD, INDUCTION_CONFIG.vocab_size, torch.Generator().manual_seed(HELD_OUT_SEED)
    )
    was_training = model.training
    model.eval()
    attention = attention_weights(model, tokens)
    first, repeated = copying_loss(model, tokens, HELD_OUT_PERIOD)
    ablated = {}
    for layer in range(INDUCTION_CONFIG.n_layers):
        for head in range(INDUCTION_CONFIG.n_heads):
            with ablate_heads(model, [(layer, head)]):
                ablated[f"{layer},{head}"] = round(copying_loss(model, tokens, HELD_OUT_PERIOD)[1], 4)
    model.train(was_training)
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


def dominance(result: dict[str, Any]) -> dict[str, object]:
    """The best layer-1 induction head, its score against every other head's, and what ablating it costs."""
    scores = torch.tensor(result["induction_score"])  # (layers, heads)
    best = int(scores[1].argmax())
    others = torch.cat([scores[0], scores[1, :best], scores[1, best + 1 :]])
    ratio = scores[1, best].item() / max(others.max().item(), 1e-3)
    ablated = result["loss_repeated_copy_with_head_ablated"][f"1,{best}"]
    return {
        "best_layer1_head": best,
        "best_induction_score": round(scores[1, best].item(), 4),
        "next_induction_score": round(others.max().item(), 4),
        "score_ratio": round(ratio, 1),
        "ablate_best_factor": round(ablated / result["loss_repeated_copy"], 1),
        "one_dominant_head": ratio >= DOMINANCE_RATIO,
    }


def train(
    seed: int, steps: int, weight_decay: float, checkpoints: Collection[int] = ()
) -> tuple[Decoder, TrainingLog, float, dict[int, dict[str, object]]]:
    """A fresh seeded model trained for ``steps``; also the evaluations at ``checkpoints``."""
    torch.manual_seed(seed)
    model = Decoder(INDUCTION_CONFIG)
    evaluations: dict[int, dict[str, object]] = {}

    def on_log(step: int, copy: float, other: float) -> None:
        print(f"seed {seed}  step {step:5d}  loss on copyable tokens {copy:.3f}  on the others {other:.3f}", flush=True)
        if step in checkpoints:
            evaluations[step] = evaluate(model)

    start = time.perf_counter()
    log = train_induction(model, steps, seed=seed, weight_decay=weight_decay, on_log=on_log)
    return model, log, time.perf_counter() - start, evaluations


def sweep(seeds: list[int], weight_decays: list[float], steps: int, out: Path) -> None:
    rows = []
    for weight_decay in weight_decays:
        for seed in seeds:
            checkpoints = set(range(1000, steps + 1, 1000)) | {steps}
            _, _, seconds, evaluations = train(seed, steps, weight_decay, checkpoints)
            for step, result in sorted(evaluations.items()):
                rows.append({"weight_decay": weight_decay, "seed": seed, "step": step, **dominance(result), **result})
            print(
                f"weight decay {weight_decay}, seed {seed}: {seconds:.0f} s; {json.dumps(dominance(evaluations[steps]))}"
            )
    report = {
        "config": INDUCTION_CONFIG.__dict__,
        "steps": steps,
        "threads": 1,
        "dominance_rule": f"best layer-1 induction score >= {DOMINANCE_RATIO} x every other head's",
        "command": "scripts/train_induction.py --sweep "
        + " ".join(map(str, seeds))
        + " --sweep-weight-decays "
        + " ".join(map(str, weight_decays))
        + f" --steps {steps}",
        "runs": rows,
    }
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=INDUCTION_STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weight-decay", type=float, default=INDUCTION_WEIGHT_DECAY)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    parser.add_argument("--sweep", type=int, nargs="+", metavar="SEED", help="train these seeds, write no weights")
    parser.add_argument("--sweep-weight-decays", type=float, nargs="+", default=[0.01, INDUCTION_WEIGHT_DECAY])
    args = parser.parse_args()
    if args.sweep:
        sweep(args.sweep, args.sweep_weight_decays, args.steps, args.out.with_name(SWEEP.name))
        return
    model, log, seconds, _ = train(args.seed, args.steps, args.weight_decay)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: t.contiguous() for name, t in model.state_dict().items()}, str(args.out))
    result = evaluate(model)
    report = {
        "config": INDUCTION_CONFIG.__dict__,
        "steps": args.steps,
        "seed": args.seed,
        "weight_decay": args.weight_decay,
        "train_seconds": round(seconds, 1),
        "threads": 1,
        "log": {
            "step": log.steps,
            "copy_loss": [round(x, 4) for x in log.copy_loss],
            "other_loss": [round(x, 4) for x in log.other_loss],
        },
        **result,
        "dominance": dominance(result),
    }
    log_path = args.out.with_name("induction_training_log.json")
    log_path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"trained {args.steps} steps in {seconds:.1f} s; wrote {args.out} and {log_path}")
    print(json.dumps({k: v for k, v in report.items() if k not in ("log", "config")}, indent=1))


if __name__ == "__main__":
    main()
