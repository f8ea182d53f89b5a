import pytest

from attention_course.measure import best_seconds, growth_exponent


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
