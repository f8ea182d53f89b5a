import hashlib
import os
import threading
import time

import pytest

from attention_course.measure import background_cpu_ms, best_seconds, growth_exponent


def test_growth_exponent_recovers_a_power_law() -> None:
    sizes = [512, 1024, 2048, 4096]
    assert growth_exponent(sizes, [3e-9 * n**2 for n in sizes]) == pytest.approx(2.0)
    assert growth_exponent(sizes, [0.5 * n**1.1 for n in sizes]) == pytest.approx(1.1)
    assert growth_exponent(sizes, [7.0] * 4) == pytest.approx(0.0, abs=1e-12)


def test_growth_exponent_rejects_too_few_points() -> None:
    with pytest.raises(ValueError, match="two or more distinct sizes"):
        growth_exponent([1024], [0.1])
    with pytest.raises(ValueError, match="2 values"):
        growth_exponent([1, 2, 4], [0.1, 0.2])


def test_best_seconds_warms_up_then_keeps_the_fastest_call() -> None:
    calls = []
    best = best_seconds(lambda: calls.append(None), repeats=4)
    assert len(calls) == 5  # one warm-up, four timed
    assert 0 <= best < 0.01


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads Linux's per-thread schedstat")
def test_background_cpu_ms_counts_other_threads_busy_after_fn_and_not_the_caller() -> None:
    def burn_cpu_ms(ms: float) -> None:  # hashing releases the GIL, so the caller is not held up
        end = time.thread_time() + ms / 1e3
        while time.thread_time() < end:
            hashlib.sha256(bytes(1 << 18))

    done = threading.Event()

    def burn_then_wait() -> None:  # like an OpenMP worker: spins after its work, then sleeps, still alive
        burn_cpu_ms(40)
        done.wait()

    try:
        assert background_cpu_ms(lambda: threading.Thread(target=burn_then_wait).start(), window_s=0.2) >= 30
    finally:
        done.set()
    assert background_cpu_ms(lambda: burn_cpu_ms(40), window_s=0.2) < 10  # the caller's own work does not count
