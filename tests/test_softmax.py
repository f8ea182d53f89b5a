"""softmax and logsumexp against torch, including magnitudes where the naive formula overflows."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_course import logsumexp, naive_softmax, softmax

# float32 softmax agrees with torch.softmax to a few ulps of 1.0 (~1e-7); 1e-6 leaves room for
# different summation orders. float16 holds ~3.3 significant digits: 1e-3 is its resolution.
TOL = {torch.float32: dict(atol=1e-6, rtol=1e-5), torch.float16: dict(atol=1e-3, rtol=1e-3)}


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    magnitude=st.sampled_from([1.0, 30.0, 1e4]),
    temperature=st.sampled_from([0.25, 1.0, 3.0]),
    dtype=st.sampled_from([torch.float32, torch.float16]),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_softmax_matches_torch(shape, magnitude, temperature, dtype, seed, data) -> None:
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * magnitude).to(dtype)
    expected = torch.softmax(x.float() / temperature, dim=dim).to(dtype)
    got = softmax(x, dim=dim, temperature=temperature)
    assert got.dtype == dtype and got.shape == x.shape
    torch.testing.assert_close(got, expected, **TOL[dtype])


def test_naive_softmax_overflows_where_the_stable_one_does_not() -> None:
    for dtype, big in ((torch.float32, 1e4), (torch.float16, 12.0)):
        x = torch.tensor([big, 0.0], dtype=dtype)
        assert torch.isnan(naive_softmax(x)).any(), f"naive softmax should overflow at {big} in {dtype}"
        torch.testing.assert_close(softmax(x), torch.softmax(x.float(), -1).to(dtype), **TOL[dtype])


def test_all_masked_row_gives_zeros_not_nan() -> None:
    x = torch.tensor([[0.0, float("-inf")], [float("-inf"), float("-inf")]])
    torch.testing.assert_close(softmax(x), torch.tensor([[1.0, 0.0], [0.0, 0.0]]))


def test_rows_sum_to_one_and_temperature_orders_entropy() -> None:
    x = torch.randn(4, 7, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(softmax(x).sum(-1), torch.ones(4))

    def entropy(p: torch.Tensor) -> torch.Tensor:
        return -(p * p.log()).sum(-1)

    assert (entropy(softmax(x, temperature=0.5)) < entropy(softmax(x)) - 1e-3).all()
    assert (entropy(softmax(x, temperature=2.0)) > entropy(softmax(x)) + 1e-3).all()


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    magnitude=st.sampled_from([1.0, 1e4]),
    keepdim=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_logsumexp_matches_torch(shape, magnitude, keepdim, seed) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * magnitude
    torch.testing.assert_close(logsumexp(x, dim=-1, keepdim=keepdim), torch.logsumexp(x, dim=-1, keepdim=keepdim))


def test_logsumexp_of_all_minus_inf_is_minus_inf() -> None:
    assert logsumexp(torch.full((3,), float("-inf"))).item() == float("-inf")
