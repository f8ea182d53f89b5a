r"""How many numbers attention moves between slow and fast memory (lesson 11).

A GPU has a large, slow memory (HBM, tens of GB at ~2-3 TB/s) and a small, fast one next to
the compute units (SRAM, ~100-200 KB per streaming multiprocessor at ~20 TB/s). Attention does
few FLOPs per number it reads, so its speed is set by how many numbers cross between the two.
This module counts those reads and writes (in numbers, not bytes) the way FlashAttention
(Dao et al., 2022, section 3.2 and appendix C) does:

* standard attention (the paper's Algorithm 0) writes $S = QK^\top$ and $P = \mathrm{softmax}(S)$
  to HBM and reads them back: $\Theta(N d + N^2)$ accesses;
* FlashAttention (Algorithm 1) with an SRAM of $M$ numbers uses key tiles of $B_c =
  \lceil M / 4d \rceil$ rows and query tiles of $B_r = \min(\lceil M / 4d \rceil, d)$ rows, and
  re-reads $Q$ and $O$ once per key tile: $\Theta(N^2 d^2 / M)$ accesses;
* ``tiled_attention`` of this package (the loop order of FlashAttention-2: query tiles outside)
  reads each query tile once and re-reads $K$ and $V$ once per query tile.

A ragged last tile is counted with its real size, so every count is exact, not just its order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._validation import require_count


@dataclass(frozen=True)
class IOCount:
    """Numbers read from and written to slow memory (HBM)."""

    reads: int
    writes: int

    @property
    def total(self) -> int:
        return self.reads + self.writes


def standard_attention_io(n: int, d: int) -> IOCount:
    r"""HBM traffic of standard attention (Algorithm 0): $4Nd + 4N^2$ numbers.

    1. read $Q, K$ ($2Nd$), write $S = QK^\top$ ($N^2$);
    2. read $S$ ($N^2$), write $P = \mathrm{softmax}(S)$ ($N^2$);
    3. read $P$ and $V$ ($N^2 + Nd$), write $O = PV$ ($Nd$).

    Args:
        n: sequence length N (queries = keys).
        d: head dimension.

    Returns:
        ``IOCount(reads=3Nd + 2N², writes=Nd + 2N²)``.
    """
    n, d = require_count("n", n), require_count("d", d)
    return IOCount(reads=3 * n * d + 2 * n * n, writes=n * d + 2 * n * n)


def flash_block_sizes(d: int, sram: int) -> tuple[int, int]:
    r"""The paper's tile sizes for an SRAM of ``sram`` numbers: $B_r = \min(\lceil M/4d \rceil, d)$, $B_c = \lceil M/4d \rceil$.

    $B_c$ keys and values ($2 B_c d$ numbers) plus $B_r$ queries and outputs ($2 B_r d \le 2 B_c d$)
    fill at most about $M$.

    Args:
        d: head dimension.
        sram: M, numbers that fit in fast memory.

    Returns:
        ``(block_q, block_k) = (B_r, B_c)``.
    """
    d, sram = require_count("d", d), require_count("sram", sram)
    block_k = math.ceil(sram / (4 * d))
    return min(block_k, d), block_k


def flash_attention_io(n: int, d: int, sram: int) -> IOCount:
    r"""HBM traffic of FlashAttention's Algorithm 1 with the tile sizes of ``flash_block_sizes``.

    Initialise $O, \ell, m$ in HBM ($Nd + 2N$ writes). For each of the $T_c = \lceil N/B_c \rceil$
    key tiles: read $K_j, V_j$ once ($2Nd$ over all tiles), and for every query tile read
    $Q_i, O_i, \ell_i, m_i$ and write back $O_i, \ell_i, m_i$ ($2Nd + 2N$ reads and $Nd + 2N$
    writes per key tile). Total $\Theta(T_c N d) = \Theta(N^2 d^2 / M)$ since $T_c \approx 4Nd/M$.

    Args:
        n: sequence length N; d: head dimension; sram: M, numbers that fit in fast memory.

    Returns:
        ``IOCount(reads=2Nd + T_c (2Nd + 2N), writes=Nd + 2N + T_c (Nd + 2N))``.
    """
    n = require_count("n", n)
    _, block_k = flash_block_sizes(d, sram)
    key_tiles = math.ceil(n / block_k)
    return IOCount(
        reads=2 * n * d + key_tiles * (2 * n * d + 2 * n), writes=n * d + 2 * n + key_tiles * (n * d + 2 * n)
    )


def tiled_attention_io(n: int, d: int, block_q: int, block_k: int, causal: bool = False) -> IOCount:
    r"""HBM traffic of ``flash.tiled_attention``: query tiles outside, key tiles inside.

    Each query tile reads its queries once ($Nd$ in all), reads every key tile it visits ($K_j$ and
    $V_j$, $2 B_k d$ each) and writes its output and log-sum-exp once ($Nd + N$). Non-causal, that is
    $Nd + 2Nd \lceil N / B_q \rceil$ reads: larger query tiles mean fewer passes over $K$ and $V$;
    ``block_k`` changes how much fits in fast memory, not the traffic. Causal, a query tile skips
    the key tiles that start after its last query.

    Args:
        n: sequence length N (queries = keys); d: head dimension (d_k = d_v).
        block_q: queries per tile; block_k: keys per tile.
        causal: skip the key tiles above the diagonal.

    Returns:
        the reads and writes.
    """
    n, d = require_count("n", n), require_count("d", d)
    block_q, block_k = require_count("block_q", block_q), require_count("block_k", block_k)
    kv_reads = 0
    for q_start in range(0, n, block_q):
        last_key = min(q_start + block_q, n) if causal else n
        kv_reads += 2 * d * min(math.ceil(last_key / block_k) * block_k, n)
    return IOCount(reads=n * d + kv_reads, writes=n * d + n)


def tiled_sram_numbers(d: int, block_q: int, block_k: int) -> int:
    r"""Fast memory one tile of ``tiled_attention`` needs: $Q_i$, $O_i$, $K_j$, $V_j$, the scores and $m, \ell$.

    Args:
        d: head dimension; block_q: queries per tile; block_k: keys per tile.

    Returns:
        $2 B_q d + 2 B_k d + B_q B_k + 2 B_q$ numbers.
    """
    d = require_count("d", d)
    block_q, block_k = require_count("block_q", block_q), require_count("block_k", block_k)
    return 2 * block_q * d + 2 * block_k * d + block_q * block_k + 2 * block_q
