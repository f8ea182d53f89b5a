"""Compare a learner's result with the reference's and say, in one line, how they differ."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import Tensor

_SHOW_UP_TO = 12  # tensors with at most this many entries are printed in full in hints


def clone(value: Any) -> Any:
    """Deep copy of the tensors inside tuples, lists, dicts and dataclasses (other objects are shared)."""
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, tuple | list):
        return type(value)(clone(v) for v in value)
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(
            value, **{f.name: clone(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        )
    if isinstance(value, torch.nn.Module):
        return copy.deepcopy(value)
    return value


@dataclasses.dataclass(frozen=True)
class Opaque:
    """Something a learner's function returned that is neither a tensor nor a plain value.

    The worker sends its type's name and a short rendering instead of the object, so the grader
    never has to load (or run) anything the learner made. Two are ``same`` when their types match.
    """

    type_name: str
    text: str

    def __repr__(self) -> str:
        return self.text


_OPAQUE_KEY = "__opaque__"
_MAX_DEPTH = 32
_MAX_ITEMS = 100_000


def to_wire(value: Any, depth: int = 0) -> Any:
    """``value`` as plain data that ``torch.load(weights_only=True)`` reads back without running code.

    Tensors become detached, plain, strided CPU tensors; numbers, strings, ``None``, tuples, lists and
    dicts keep their shape; a dataclass becomes a dict of its fields plus its type's name; anything
    else becomes a marker holding its type's name and a short rendering (see :class:`Opaque`).
    """
    if depth > _MAX_DEPTH:
        return {_OPAQUE_KEY: "object nested too deeply", "text": "..."}
    if isinstance(value, Tensor):
        if value.layout != torch.strided or value.device.type == "meta":
            return {_OPAQUE_KEY: f"{value.layout} tensor", "text": f"tensor of shape {tuple(value.shape)}"}
        plain = value.detach().to("cpu").clone()
        return plain if type(plain) is Tensor else plain.as_subclass(Tensor)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)[:10_000]
    if isinstance(value, torch.Size):
        return tuple(int(v) for v in value)
    if isinstance(value, tuple | list):
        if len(value) > _MAX_ITEMS:
            return {_OPAQUE_KEY: type(value).__name__, "text": f"a {type(value).__name__} of {len(value)} items"}
        items = [to_wire(v, depth + 1) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, dict) and len(value) <= _MAX_ITEMS:
        return {
            (k if isinstance(k, str | int) and not isinstance(k, bool) else repr(k)): to_wire(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, Opaque):
        return {_OPAQUE_KEY: value.type_name, "text": value.text}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: to_wire(getattr(value, f.name, None), depth + 1) for f in dataclasses.fields(value)}
        return {"__dataclass__": type(value).__name__, **fields}
    name = getattr(value, "__qualname__", None) if callable(value) else None
    text = f"<{type(value).__name__} {name}>" if isinstance(name, str) else _safe_repr(value)
    return {_OPAQUE_KEY: type(value).__name__, "text": text}


def _safe_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 120 else text[:117] + "..."


def from_wire(value: Any) -> Any:
    """The inverse of :func:`to_wire` for what it turned into markers (markers become :class:`Opaque`)."""
    if isinstance(value, tuple | list):
        items = [from_wire(v) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, dict):
        if set(value) == {_OPAQUE_KEY, "text"}:
            return Opaque(str(value[_OPAQUE_KEY]), str(value["text"]))
        return {k: from_wire(v) for k, v in value.items()}
    return value


def plain(value: Any) -> Any:
    """What the worker would send for ``value``, as the parent sees it (used for reference outputs)."""
    return from_wire(to_wire(value))


def same(a: Any, b: Any) -> bool:
    """Exactly equal (NaN equal to NaN): used to detect inputs changed in place."""
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b) or _nan_equal(a, b))
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if dataclasses.is_dataclass(a) and not isinstance(a, type) and type(a) is type(b):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, Opaque) or isinstance(b, Opaque):
        return isinstance(a, Opaque) and isinstance(b, Opaque) and a.type_name == b.type_name
    if isinstance(a, bool | int | float | str | None) or isinstance(b, bool | int | float | str | None):
        return type(a) is type(b) and (a == b or (a != a and b != b))  # a Python list changed in place
    return type(a) is type(b)


def _nan_equal(a: Tensor, b: Tensor) -> bool:
    if not a.is_floating_point():
        return False
    return bool(
        torch.equal(torch.nan_to_num(a, nan=0.5), torch.nan_to_num(b, nan=0.5))
        and torch.equal(torch.isnan(a), torch.isnan(b))
    )


def short(value: Any) -> str:
    """A compact, readable rendering for hints."""
    if isinstance(value, Tensor):
        if value.numel() <= _SHOW_UP_TO:
            shown = value.detach().cpu()
            if shown.is_floating_point():
                shown = shown.float().round(decimals=4)
            text = repr(shown).replace("\n", " ")
            return " ".join(text.split())
        return f"tensor of shape {tuple(value.shape)} ({value.dtype})"
    if isinstance(value, tuple | list):
        inner = ", ".join(short(v) for v in value)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def describe_type(value: Any) -> str:
    if isinstance(value, Opaque):
        return f"a {value.type_name}"
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"


def difference(
    got: Any, expected: Any, *, atol: float, rtol: float, equal_nan: bool = False, where: str = ""
) -> str | None:
    """``None`` when ``got`` matches ``expected``; otherwise what is wrong, in a few words."""
    label = f" ({where})" if where else ""
    if isinstance(expected, Tensor):
        if not isinstance(got, Tensor):
            return f"returned {describe_type(got)}{label}, expected a tensor of shape {tuple(expected.shape)}"
        if got.shape != expected.shape:
            return f"returned shape {tuple(got.shape)}{label}, expected {tuple(expected.shape)}"
        if got.dtype != expected.dtype:
            return f"returned dtype {got.dtype}{label}, expected {expected.dtype}"
        if expected.dtype == torch.bool or not expected.is_floating_point():
            if torch.equal(got, expected):
                return None
            bad = (got != expected).nonzero()[0].tolist()
            return f"wrong value at index {tuple(bad)}{label}: expected {expected[tuple(bad)].item()}, got {got[tuple(bad)].item()}"
        got_nan, exp_nan = torch.isnan(got), torch.isnan(expected)
        if not equal_nan and bool(got_nan.any()) and not bool(exp_nan.any()):
            return f"returned NaN at {int(got_nan.sum())} of {got.numel()} entries{label}"
        if torch.allclose(got.double(), expected.double(), atol=atol, rtol=rtol, equal_nan=True):
            return None
        diff = (got.double() - expected.double()).abs().nan_to_num(nan=float("inf"))
        index = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
        return (
            f"wrong values{label}: largest difference {float(diff[index]):.3g} at index {index} "
            f"(expected {expected[index].item():.4g}, got {got[index].item():.4g})"
        )
    if isinstance(expected, tuple | list):
        if not isinstance(got, tuple | list) or len(got) != len(expected):
            return f"returned {describe_type(got)}{label}, expected {describe_type(expected)}"
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            problem = difference(
                g, e, atol=atol, rtol=rtol, equal_nan=equal_nan, where=f"item {i}" + (f" of {where}" if where else "")
            )
            if problem:
                return problem
        return None
    if isinstance(expected, dict):
        if not isinstance(got, dict) or got.keys() != expected.keys():
            return f"returned {describe_type(got)}{label}, expected a dict with keys {sorted(expected)}"
        for key in expected:
            problem = difference(
                got[key], expected[key], atol=atol, rtol=rtol, equal_nan=equal_nan, where=f"key {key!r}"
            )
            if problem:
                return problem
        return None
    if isinstance(expected, float | int) and not isinstance(expected, bool):
        if not isinstance(got, float | int) or isinstance(got, bool):
            return f"returned {describe_type(got)}{label}, expected a number"
        return (
            None
            if abs(got - expected) <= atol + rtol * abs(expected)
            else f"returned {got}{label}, expected {expected}"
        )
    return None if got == expected else f"returned {short(got)}{label}, expected {short(expected)}"
