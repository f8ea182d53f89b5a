"""The paged cache: gather, copy-on-write, a mixed-length batch with a shared prefix == contiguous decoding."""

from __future__ import annotations

import pytest
import torch

from attention_course.decoder import Decoder, DecoderConfig
from attention_course.generation import decode_step, new_cache, prefill
from attention_course.paged_cache import PagedKVCache, paged_gather, paged_write_and_gather


def test_gather_reads_tokens_in_order_across_blocks() -> None:
    pool = torch.zeros(6, 1, 3, 1)  # 6 blocks of 3 positions, 1 head, width 1
    table = torch.tensor([4, 1, 5])  # positions 0-2 in block 4, 3-5 in block 1, 6-8 in block 5
    for t in range(8):
        pool[table[t // 3], 0, t % 3, 0] = 10.0 + t
    assert paged_gather(pool, table, 8)[0, :, 0].tolist() == [10.0 + t for t in range(8)]
    assert paged_gather(pool, table, 0).shape == (1, 0, 1)


def test_write_copies_a_shared_block_and_leaves_it_untouched() -> None:
    pool = torch.arange(4 * 2 * 2 * 1, dtype=torch.float32).reshape(4, 2, 2, 1)
    table, refs = torch.tensor([0, 1]), torch.tensor([1, 2, 0, 0])  # block 1 is shared with another sequence
    rows, new_pool, new_table = paged_write_and_gather(pool, table, refs, 3, torch.tensor([[-1.0], [-2.0]]), 3)
    assert new_table.tolist() == [0, 3]
    assert torch.equal(new_pool[1], pool[1])  # the other sequence's view is unchanged
    assert new_pool[3, :, 1, 0].tolist() == [-1.0, -2.0]
    assert torch.equal(new_pool[3, :, 0], pool[1, :, 0])  # the copied prefix
    assert rows.shape == (2, 4, 1) and rows[:, -1, 0].tolist() == [-1.0, -2.0]
    assert table.tolist() == [0, 1] and torch.equal(pool, torch.arange(16, dtype=torch.float32).reshape(4, 2, 2, 1))


def _model() -> Decoder:
    torch.manual_seed(0)
    config = DecoderConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64)
    return Decoder(config).eval()


def _contiguous_logits(model: Decoder, tokens: torch.Tensor, n_prompt: int) -> torch.Tensor:
    cache = new_cache(model, 1)
    rows = [prefill(model, tokens[None, :n_prompt], cache)[0, -1]]
    for t in range(n_prompt, tokens.shape[0]):
        rows.append(decode_step(model, tokens[None, t : t + 1], cache)[0])
    return torch.stack(rows)


@torch.no_grad()
def test_mixed_batch_with_shared_prefix_matches_contiguous_decoding() -> None:
    model = _model()
    gen = torch.Generator().manual_seed(1)
    prefix = torch.randint(0, 40, (7,), generator=gen)  # 7 tokens: two full blocks of 3 and one partial
    suffixes = [torch.randint(0, 40, (n,), generator=gen) for n in (1, 4, 0)]
    cache = PagedKVCache(2, n_blocks=30, block_size=3, n_kv_heads=2, d_head=8, max_blocks_per_seq=10)
    cache.add_sequence("prompt")
    cache.set_batch(["prompt"])
    model(prefix[None], cache=cache)
    prompt_keys = cache.gather(1, "prompt")[0].clone()
    blocks_after_prefix = cache.blocks_in_use()
    last = {}
    for i, suffix in enumerate(suffixes):
        cache.fork("prompt", i)
        cache.set_batch([i])
        if len(suffix):
            last[i] = model(suffix[None], cache=cache)[0, -1]
    assert torch.equal(cache.gather(1, "prompt")[0], prompt_keys)  # children's writes were copied, not written through
    assert cache.blocks_in_use() < blocks_after_prefix * 4  # the two full prefix blocks are shared, not copied
    cache.free_sequence("prompt")
    full = [torch.cat([prefix, s]) for s in suffixes]
    n_new = 6
    continuation = torch.randint(0, 40, (3, n_new), generator=gen)
    cache.set_batch([0, 1, 2])
    paged = [model(continuation[:, t : t + 1], cache=cache)[:, -1] for t in range(n_new)]  # (3, V) each
    for i in range(3):
        sequence = torch.cat([full[i], continuation[i]])
        expected = _contiguous_logits(model, sequence, len(full[i]))  # row 0 predicts continuation[i, 0]
        got = torch.stack([p[i] for p in paged])
        torch.testing.assert_close(got, expected[1:], atol=1e-5, rtol=1e-4)  # same float32 arithmetic per token
        if i in last:
            torch.testing.assert_close(last[i], expected[0], atol=1e-5, rtol=1e-4)
    assert cache.lengths == {0: 14, 1: 17, 2: 13}


def test_freeing_returns_blocks() -> None:
    cache = PagedKVCache(1, n_blocks=4, block_size=2, n_kv_heads=1, d_head=2, max_blocks_per_seq=4)
    cache.add_sequence("a")
    cache.set_batch(["a"])
    cache.attend(0, torch.randn(1, 1, 3, 2), torch.randn(1, 1, 3, 2), torch.randn(1, 1, 3, 2))
    cache.advance(3)
    cache.fork("a", "b")
    assert cache.blocks_in_use() == 2 and len(cache.free_blocks) == 2
    cache.free_sequence("a")
    assert cache.blocks_in_use() == 2  # b still holds them
    cache.free_sequence("b")
    assert cache.blocks_in_use() == 0 and len(cache.free_blocks) == 4


def _state(cache: PagedKVCache) -> tuple:
    return (
        cache.k_pool.clone(),
        cache.v_pool.clone(),
        cache.ref_counts.clone(),
        list(cache.free_blocks),
        {k: list(v) for k, v in cache.tables.items()},
        dict(cache.lengths),
    )


def _same(a: tuple, b: tuple) -> bool:
    return all(torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y for x, y in zip(a, b, strict=True))


def test_bad_inputs_raise_clearly_and_corrupt_nothing() -> None:
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        PagedKVCache(1, n_blocks=4, block_size=0, n_kv_heads=1, d_head=2, max_blocks_per_seq=4)
    cache = PagedKVCache(1, n_blocks=3, block_size=2, n_kv_heads=1, d_head=2, max_blocks_per_seq=2)
    cache.add_sequence("a")
    cache.set_batch(["a"])
    x = torch.randn(1, 1, 3, 2)
    cache.attend(0, x, x, x)
    cache.advance(3)
    before = _state(cache)
    with pytest.raises(ValueError, match="block table allows 2 blocks of 2 = 4"):
        cache.attend(0, torch.randn(1, 1, 2, 2), torch.randn(1, 1, 2, 2), torch.randn(1, 1, 2, 2))
    assert _same(before, _state(cache))
    with pytest.raises(KeyError, match="unknown sequence id 'b'"):
        cache.set_batch(["a", "b"])
    with pytest.raises(KeyError, match="unknown sequence id 'zz'"):
        cache.fork("zz", "c")
    with pytest.raises(KeyError, match="unknown sequence id 7"):
        cache.free_sequence(7)
    assert _same(before, _state(cache)) and cache.batch == ["a"]
    cache.fork("a", "b")
    cache.add_sequence("c")
    cache.set_batch(["b", "c"])  # b's shared last block must be copied, c needs a block: 2 > 1 free
    before = _state(cache)
    with pytest.raises(RuntimeError, match="out of blocks: 2 needed, 1 free"):
        y = torch.randn(2, 1, 1, 2)
        cache.attend(0, y, y, y)
    assert _same(before, _state(cache))
    with pytest.raises(ValueError, match="already in use"):
        cache.add_sequence("a")
    with pytest.raises(ValueError, match="length=9 is more than a block table of 2 blocks"):
        paged_gather(torch.zeros(3, 1, 4, 2), torch.tensor([0, 1]), 9)
