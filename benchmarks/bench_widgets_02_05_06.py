"""How long a control move takes in the widgets of lessons 02, 05 and 06 (query explorer, mask builder, head explorer).

A move is what happens in the kernel when a learner changes a control: the value is set, the figure
is drawn and encoded as the PNG the browser shows. Each control of each widget is moved to its next
value several times; printed per widget: the median and worst wall-clock time, and the median CPU
time of the process (close to the wall-clock time on an idle core; on a loaded machine the wall
clock also counts waiting for a core, so the load average is printed too).

    .venv/bin/python benchmarks/bench_widgets_02_05_06.py
"""

from __future__ import annotations

import os
import statistics
import time

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

from attention_course.qkv import qkv_projection  # noqa: E402
from attention_course.teaching.sentences import TIGER_FEATURES, tiger_sentence  # noqa: E402
from attention_course.teaching.widgets import head_explorer, mask_builder, query_explorer  # noqa: E402


def main(rounds: int = 3) -> None:
    sentence = tiger_sentence()
    x = sentence.embeddings
    feature = {name: i for i, name in enumerate(TIGER_FEATURES)}
    w_q = torch.zeros(6, 6)
    w_q[feature["water"], feature["animal"]] = w_q[feature["animal"], feature["thing"]] = 1.0
    q, k, v = qkv_projection(x, w_q, torch.eye(6), torch.eye(6))
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(12, 12, generator=generator) for _ in range(4)]
    built = {
        "02 query_explorer": query_explorer(sentence.tokens, {"Q = K = V = X": (x, x, x), "hand-made W_Q": (q, k, v)},
                                            word="thirsty"),
        "05 mask_builder": mask_builder(sentence.tokens[:8], x[:8], pad_side="left", n_real=5),
        "06 head_explorer": head_explorer(["the", "cat", "sat", "on", "the", "mat"],
                                          torch.randn(6, 12, generator=generator), *weights),
    }
    for name, widget in built.items():
        wall, cpu = [], []
        for _ in range(rounds):
            for control in widget._controls:
                options = list(getattr(control, "options", [])) or list(range(control.min, control.max + 1))
                values = [option[1] if isinstance(option, tuple) else option for option in options]
                start, start_cpu = time.perf_counter(), time.process_time()
                control.value = values[(values.index(control.value) + 1) % len(values)]
                wall.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
        print(f"{name}: {len(wall)} moves; wall clock median {statistics.median(wall):.3f} s (worst {max(wall):.3f} s); "
              f"CPU time median {statistics.median(cpu):.3f} s")
    print("load average (1, 5, 15 min):", ", ".join(f"{load:.1f}" for load in os.getloadavg()),
          f"on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
