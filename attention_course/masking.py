r"""Masks: which keys each query may look at (lesson 05).

One convention throughout the course: a boolean mask is ``True`` where attention is **allowed**
(the same as ``torch.nn.functional.scaled_dot_product_attention``'s ``attn_mask``). Note that
``torch.nn.MultiheadAttention``'s ``key_padding_mask`` uses the opposite (``True`` = ignore).

Masked scores become $-\infty$ before the softmax, so $e^{-\infty} = 0$ weight. A query whose keys
are *all* masked has no valid distribution: ``torch.softmax`` gives NaN there (0/0), and so does
``torch.nn.MultiheadAttention``. The course returns all-zero weights and therefore a zero output
vector for that query (see ``softmax``), which keeps NaN from spreading through later layers; it
is also what ``scaled_dot_product_attention`` (PyTorch 2.13, CPU) and FlashAttention kernels return.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._validation import require_rank, require_tensor, shape_of


def causal_mask(n_queries: int, n_keys: int | None = None, *, device: torch.device | str | None = None) -> Tensor:
    """Lower-triangular mask: query ``i`` may see keys ``0..i`` (itself and the past).

    Aligned at the top-left like PyTorch's ``is_causal``: with ``n_keys != n_queries``,
    query ``i`` sees keys ``j <= i``.

    Args:
        n_queries: L, number of query positions.
        n_keys: S, number of key positions (default ``L``).

    Returns:
        bool ``(L, S)``, ``True`` where ``j <= i``.
    """
    n_keys = n_queries if n_keys is None else n_keys
    if n_queries < 0 or n_keys < 0:
        raise ValueError(f"n_queries and n_keys must be >= 0, got {n_queries} and {n_keys}")
    return torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril()


def padding_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """Which positions of a padded batch hold real tokens.

    Args:
        lengths: int ``(B,)``, the real length of each sequence.
        max_len: padded length S (default ``lengths.max()``).

    Returns:
        bool ``(B, S)``, ``True`` at real tokens, ``False`` at padding.
    """
    require_tensor("lengths", lengths)
    require_rank("lengths", lengths, 1, "(B,)")
    if lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must be an integer tensor, got dtype {lengths.dtype}")
    if max_len is None:
        max_len = int(lengths.max()) if lengths.numel() else 0
    if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > max_len):
        raise ValueError(f"lengths must lie in [0, max_len={max_len}], got {lengths.tolist()}")
    return torch.arange(max_len, device=lengths.device) < lengths[:, None]


def key_mask_to_attention_mask(key_mask: Tensor) -> Tensor:
    """Turn a per-key mask ``(B, S)`` into one that broadcasts over queries: ``(B, 1, S)``.

    Masking keys (columns), never queries (rows): a padded *query* still gets an output, which
    the model ignores later; a padded *key* must never receive weight.
    """
    require_tensor("key_mask", key_mask)
    require_rank("key_mask", key_mask, 2, "(B, S)")
    return key_mask[:, None, :]


def combine_masks(*masks: Tensor | None) -> Tensor | None:
    """Logical AND of boolean masks with broadcasting (``None`` entries are skipped).

    Returns:
        bool mask of the broadcast shape, or ``None`` when no mask was given.
    """
    out: Tensor | None = None
    for i, mask in enumerate(masks):
        if mask is None:
            continue
        require_tensor(f"masks[{i}]", mask)
        if mask.dtype != torch.bool:
            raise TypeError(f"masks[{i}] must be boolean, got dtype {mask.dtype} with shape {shape_of(mask)}")
        out = mask if out is None else out & mask
    return out
