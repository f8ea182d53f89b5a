"""Control-move latency of the lessons' widgets (issue 20 asks for <= 0.3 s on 2 cores).

A move is what the kernel does when a learner changes a control: the value is set, the figure is
drawn and encoded as the PNG the browser shows. Each control of each widget is moved to a quarter,
three quarters and the start of its range, ``--rounds`` times; printed per control: the median and
worst wall-clock time and the median CPU time of the update. On a busy machine the wall clock also
counts waiting for a core, so the load average is printed too.

    .venv/bin/python benchmarks/bench_widgets.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

from attention_course.decoder import Decoder, DecoderConfig  # noqa: E402
from attention_course.qkv import qkv_projection  # noqa: E402
from attention_course.teaching import widgets  # noqa: E402
from attention_course.teaching.sentences import TIGER_FEATURES, tiger_sentence  # noqa: E402


def _values(control: object) -> list[object]:
    options = list(getattr(control, "options", []))
    if options:
        return [option[1] if isinstance(option, tuple) else option for option in options]
    return list(range(control.min, control.max + 1))  # type: ignore[attr-defined]


def move_every_control(widget: widgets.PlotWidget | widgets.FigureWidget, name: str, rounds: int) -> float:
    """Print each control's update times; return the worst median wall-clock time, in seconds."""
    worst = 0.0
    for control in widget.controls:
        values = _values(control)
        wall, cpu = [], []
        for _ in range(rounds):
            for target in (values[len(values) // 4], values[3 * len(values) // 4], values[0]):
                if control.value == target:
                    continue
                start, start_cpu = time.perf_counter(), time.process_time()
                control.value = target
                wall.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
        if not wall:
            continue
        worst = max(worst, statistics.median(wall))
        print(
            f"{name:20s} {control.description[:16]:16s} wall median {1e3 * statistics.median(wall):5.0f} ms, "
            f"worst {1e3 * max(wall):5.0f} ms | CPU median {1e3 * statistics.median(cpu):4.0f} ms"
        )
    return worst


def build() -> dict[str, widgets.PlotWidget | widgets.FigureWidget]:
    """One widget of each lesson that has one added for issue 20, built as its lesson builds it."""
    generator = torch.Generator().manual_seed(0)
    sentence = tiger_sentence()
    x = sentence.embeddings
    feature = {name: i for i, name in enumerate(TIGER_FEATURES)}
    w_q = torch.zeros(6, 6)
    w_q[feature["water"], feature["animal"]] = w_q[feature["animal"], feature["thing"]] = 1.0
    q, k, v = qkv_projection(x, w_q, torch.eye(6), torch.eye(6))
    weights = [torch.randn(12, 12, generator=generator) for _ in range(4)]
    alignments = torch.softmax(torch.randn(16, 6, 6, generator=generator), dim=-1)
    model = Decoder(DecoderConfig(vocab_size=64, d_model=64, n_layers=2, n_heads=4, max_seq_len=320)).eval()
    tokens = ["[CLS]", *(f"w{i}" for i in range(16)), "[SEP]"]
    attention = torch.softmax(torch.randn(6, 12, 18, 18, generator=generator), dim=-1)
    short = torch.softmax(torch.randn(6, 12, 10, 10, generator=generator), dim=-1)
    return {
        "02 query_explorer": widgets.query_explorer(
            sentence.tokens, {"Q = K = V = X": (x, x, x), "hand-made W_Q": (q, k, v)}, word="thirsty"
        ),
        "05 mask_builder": widgets.mask_builder(sentence.tokens[:8], x[:8], pad_side="left", n_real=5),
        "06 head_explorer": widgets.head_explorer(
            ["the", "cat", "sat", "on", "the", "mat"], torch.randn(6, 12, generator=generator), *weights
        ),
        "07 alignment_stepper": widgets.alignment_stepper(
            list(range(0, 160, 10)),
            alignments,
            torch.randint(0, 10, (16, 6), generator=generator),
            [3, 1, 4, 1, 5, 9],
            [1.0] * 150,
        ),
        "08 rope_dial": widgets.rope_dial(),
        "09 decode_stepper": widgets.decode_stepper(model, torch.tensor([[3, 14, 15, 9, 26]]), 24),
        "10 pattern_picker": widgets.pattern_picker(),
        "12 head_view": widgets.head_view({"long": (tokens, attention), "short": (tokens[:10], short)}),
        "13 rolling_buffer": widgets.rolling_buffer_explorer(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    _ = torch.manual_seed(0)
    worst = {name: move_every_control(widget, name, args.rounds) for name, widget in build().items()}
    print("worst median per widget: " + ", ".join(f"{name.split()[0]} {1e3 * s:.0f} ms" for name, s in worst.items()))
    print(
        "load average (1, 5, 15 min):",
        ", ".join(f"{load:.1f}" for load in os.getloadavg()),
        f"on {os.cpu_count()} cores",
    )


if __name__ == "__main__":
    main()
