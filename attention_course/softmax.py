r"""Softmax and log-sum-exp, written to survive large scores.

$\mathrm{softmax}(x)_i = \dfrac{e^{x_i / T}}{\sum_j e^{x_j / T}}$.  Subtracting $m = \max_j x_j / T$
from every entry changes nothing mathematically (the factor $e^{-m}$ cancels) but keeps every
exponent at or below $e^0 = 1$, so nothing overflows.

Convention for a row with no finite entry (every score is $-\infty$, e.g. a query whose keys are
all masked): the weights are all zero, not NaN. Attention then returns a zero vector for that
query. ``torch.softmax`` returns NaN there.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._validation import require_float, require_positive


def softmax(x: Tensor, dim: int = -1, temperature: float = 1.0) -> Tensor:
    """Numerically stable softmax along ``dim``.

    Args:
        x: scores of any shape ``(..., n, ...)``; floating point.
        dim: the axis whose entries become a probability distribution.
        temperature: ``T > 0``; ``T < 1`` sharpens, ``T > 1`` flattens.

    Returns:
        Tensor with the shape and dtype of ``x``; entries along ``dim`` are >= 0 and sum to 1
        (or are all 0 where every entry of ``x`` was ``-inf``).
    """
    require_float("x", x)
    require_positive("temperature", temperature)
    # Half precision is computed in float32 and returned in its own dtype, like torch.softmax:
    # x / temperature alone can pass float16's maximum of 65504.
    compute_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    z = x.to(compute_dtype) / temperature
    row_max = z.amax(dim=dim, keepdim=True)
    # An all -inf row has max -inf; shifting by it would give -inf - (-inf) = NaN.
    row_max = torch.where(torch.isneginf(row_max), torch.zeros_like(row_max), row_max)
    exps = torch.exp(z - row_max)
    total = exps.sum(dim=dim, keepdim=True)
    return (exps / total.clamp_min(torch.finfo(compute_dtype).tiny)).to(x.dtype)


def naive_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """The textbook formula without the max-subtraction; overflows for large scores (lesson 04).

    Args:
        x: scores of any shape; floating point.
        dim: the axis to normalise.

    Returns:
        ``exp(x) / exp(x).sum(dim)``, shape of ``x``: inf/inf = NaN once ``exp`` overflows.
    """
    require_float("x", x)
    exps = torch.exp(x)
    return exps / exps.sum(dim=dim, keepdim=True)


def logsumexp(x: Tensor, dim: int = -1, keepdim: bool = False) -> Tensor:
    r"""$\log \sum_j e^{x_j}$ computed as $m + \log \sum_j e^{x_j - m}$ with $m = \max_j x_j$.

    Args:
        x: any shape; floating point.
        dim: the axis to reduce.
        keepdim: keep ``dim`` as a size-1 axis.

    Returns:
        ``x``'s shape without ``dim`` (or with size 1 there); ``-inf`` for an all ``-inf`` row.
    """
    require_float("x", x)
    row_max = x.amax(dim=dim, keepdim=True)
    safe_max = torch.where(torch.isinf(row_max), torch.zeros_like(row_max), row_max)
    out = safe_max + torch.log(torch.exp(x - safe_max).sum(dim=dim, keepdim=True))
    return out if keepdim else out.squeeze(dim)


def entropy(weights: Tensor, dim: int = -1) -> Tensor:
    r"""Entropy $-\sum_j w_j \ln w_j$ of distributions along ``dim``, in nats.

    0 for a one-hot row (all weight on one key), $\ln n$ for a uniform row over n keys.

    Args:
        weights: non-negative, summing to 1 along ``dim``; any shape ``(..., n, ...)``.
        dim: the axis holding each distribution.

    Returns:
        ``weights``' shape without ``dim``.
    """
    require_float("weights", weights)
    # 0 * ln 0 is taken as 0 (its limit); xlogy does exactly that.
    return -torch.special.xlogy(weights, weights).sum(dim=dim)
