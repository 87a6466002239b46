"""Masked-LM batches: masking rates and specials, packing documents into full rows, and packed batches that
are the same whatever the number of processes."""

from __future__ import annotations

import torch

import numpy as np

from lightning_modules.data import IGNORE_INDEX, PackedMLMBatches, mask_tokens, pad_ids, permuted
from lightning_modules.token_shards import PackedRows

SPECIALS = [0, 1, 2, 3, 4]  # [PAD] [UNK] [CLS] [SEP] [MASK]
MASK_ID, VOCAB = 4, 500


def _batch(seed: int = 0) -> torch.Tensor:
    """(256, 64) ids: [CLS] ordinary... [SEP] then padding, with a few [UNK] inside."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(10, 64, (256,), generator=gen)
    rows = []
    for n in lengths.tolist():
        body = torch.randint(5, VOCAB, (n - 2,), generator=gen)
        body[::17] = 1  # [UNK]
        rows.append([2, *body.tolist(), 3])
    ids, _ = pad_ids(rows, pad_id=0)
    return ids


def test_masking_rates_and_specials() -> None:
    ids = _batch()
    masked, labels = mask_tokens(ids, SPECIALS, MASK_ID, VOCAB, 0.15, torch.Generator().manual_seed(1))
    candidate = ~torch.isin(ids, torch.tensor(SPECIALS))
    chosen = labels != IGNORE_INDEX
    assert not (chosen & ~candidate).any(), "special or padding tokens were chosen"
    assert torch.equal(masked[~chosen], ids[~chosen]), "unchosen positions must be unchanged"
    assert torch.equal(labels[chosen], ids[chosen]), "labels hold the original ids at targets"
    rate = chosen.sum().item() / candidate.sum().item()
    assert abs(rate - 0.15) < 0.01
    n = chosen.sum().item()
    to_mask = (masked[chosen] == MASK_ID).sum().item() / n
    kept = (masked[chosen] == ids[chosen]).sum().item() / n
    randomised = 1 - to_mask - kept
    assert abs(to_mask - 0.8) < 0.03 and abs(kept - 0.1) < 0.03 and abs(randomised - 0.1) < 0.03
    replaced = chosen & (masked != MASK_ID) & (masked != ids)
    assert not torch.isin(masked[replaced], torch.tensor(SPECIALS)).any(), "random replacements are never special"


def test_masking_always_has_a_target() -> None:
    ids = torch.tensor([[2, 10, 3, 0]])
    for seed in range(20):
        _, labels = mask_tokens(ids, SPECIALS, MASK_ID, VOCAB, 0.01, torch.Generator().manual_seed(seed))
        assert (labels != IGNORE_INDEX).sum() >= 1 and labels[0, 1] == 10


def test_packing_fills_every_row() -> None:
    docs = [[2, 10, 11, 3], [2, 12, 3], [2, 13, 14, 15, 16, 17, 3], [2, 18, 3]]
    stream = np.array([t for d in docs for t in d])
    rows = PackedRows([stream], row_length=5)
    assert len(rows) == 3  # 16 tokens -> 3 full rows, the 1-token tail dropped
    assert rows.in_memory().flatten().tolist() == stream[:15].tolist()
    # Several shards: each is cut on its own, and rows are gathered from any of them in any order.
    shards = PackedRows([stream[:7], stream[7:9], stream[9:]], row_length=3)
    assert len(shards) == 2 + 0 + 2  # 7 -> 2 rows, 2 -> none, 7 -> 2
    assert shards[np.array([3, 0, 2])].tolist() == [stream[12:15].tolist(), stream[0:3].tolist(), stream[9:12].tolist()]


def test_permutation_is_a_keyed_bijection() -> None:
    for n in (1, 2, 7, 1000, 4097):
        order = permuted(np.arange(n), n, key=11)
        assert sorted(order.tolist()) == list(range(n))
        assert permuted(np.arange(n), n, key=11).tolist() == order.tolist()  # the same key, the same order
    assert permuted(np.arange(1000), 1000, key=11).tolist() != permuted(np.arange(1000), 1000, key=12).tolist()
    assert permuted(np.arange(1000), 1000, key=11).tolist() != list(range(1000))
    # Any positions of the order, computed alone, agree with the whole.
    whole = permuted(np.arange(1000), 1000, key=3)
    assert permuted(np.array([5, 999, 0]), 1000, key=3).tolist() == [whole[5], whole[999], whole[0]]


def _masking() -> dict:
    return {"special_ids": SPECIALS, "mask_id": MASK_ID, "vocab_size": VOCAB, "probability": 0.15}


def test_packed_batches_are_a_function_of_seed_and_micro_batch_not_of_world_size() -> None:
    rows = torch.randint(5, VOCAB, (40, 16), generator=torch.Generator().manual_seed(0))
    one = PackedMLMBatches(rows, batch_size=8, rank=0, world_size=1, seed=3, masking=_masking())
    two = [PackedMLMBatches(rows, batch_size=4, rank=r, world_size=2, seed=3, masking=_masking()) for r in (0, 1)]
    assert len(one) == 5  # 40 rows // 8 per global micro-batch
    for m in (0, 4, 5, 12):  # inside the first epoch and in later ones (a fresh row order each epoch)
        whole = one[m]
        halves = [ds[m] for ds in two]
        assert torch.equal(torch.cat([h["input_ids"] for h in halves]), whole["input_ids"])
        assert torch.equal(torch.cat([h["labels"] for h in halves]), whole["labels"])
        # Each rank counts its own part's targets; training sums them over the ranks.
        assert sum(int(h["n_targets"]) for h in halves) == int(whole["n_targets"]) == int((whole["labels"] != IGNORE_INDEX).sum())
        # The ranks read disjoint rows, together the one process's.
        mine = [set(ds.row_numbers(m).tolist()) for ds in two]
        assert not mine[0] & mine[1] and mine[0] | mine[1] == set(one.row_numbers(m).tolist())
    # A fresh dataset (a resumed run) reproduces micro-batch 7 exactly; other micro-batches differ.
    again = PackedMLMBatches(rows, batch_size=8, rank=0, world_size=1, seed=3, masking=_masking())
    assert torch.equal(again[7]["input_ids"], one[7]["input_ids"])
    assert not torch.equal(one[6]["labels"], one[7]["labels"])
    # Every row of epoch 0 is used once before epoch 1 starts.
    used = torch.cat([one[m]["labels"].where(one[m]["labels"] != IGNORE_INDEX, one[m]["input_ids"]) for m in range(5)])
    assert sorted(map(tuple, used.tolist())) == sorted(map(tuple, rows.tolist()))
