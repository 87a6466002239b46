"""DataModules: pretraining streams the token shards of the tokenize stage; finetuning encodes the snapshot
batch by batch into compact arrays.

Masked-LM pretraining reads packed rows (documents concatenated and cut, so no step is spent on padding) from
memory-mapped shards (lightning_modules.token_shards) and masks dynamically, with the rows and the mask of
micro-batch m drawn from (seed, m) so a resumed run draws what an uninterrupted one would. Each process reads
only its own rows of a micro-batch.
The validation rows are masked once with a fixed seed so validation losses are comparable across steps and
runs. Classification batches are padded to their own longest document, and each batch holds documents of
about the same length (`LengthGroupedBatches`), so little of a batch is padding.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from data_checks.io import DoclifeError
from lightning_modules.snapshot import iter_split, no_rows
from lightning_modules.token_shards import SHARDS_DIR, PackedRows, TokenShards

IGNORE_INDEX = -100  # positions the loss skips (cross_entropy's default ignore_index)


def pad_ids(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence: (input_ids, attention_mask), both (batch, longest)."""
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def masking_draws(shape: tuple[int, ...], n_ordinary: int, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The random numbers that decide a mask over (batch, seq) ids: (target draw, action draw, replacement).

    Their shapes depend on nothing but `shape`, so a process can draw a whole global micro-batch's numbers and
    keep the rows of its own part: its mask is then the one a single process would draw for those rows.
    """
    chosen = torch.rand(shape, generator=generator)
    action = torch.rand(shape, generator=generator)
    replacement = torch.randint(n_ordinary, shape, generator=generator)
    return chosen, action, replacement


def ordinary_ids(special_ids: list[int], vocab_size: int) -> torch.Tensor:
    """Every id of the vocabulary but the special ones, in order: what a random replacement draws from."""
    every_id = torch.arange(vocab_size)
    return every_id[~torch.isin(every_id, torch.tensor(sorted(set(special_ids)), dtype=torch.long))]


def mask_tokens(
    input_ids: torch.Tensor,
    special_ids: list[int],
    mask_id: int,
    vocab_size: int,
    probability: float,
    generator: torch.Generator | None = None,
    draws: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking on (batch, seq) ids: returns (masked input_ids, labels), both (batch, seq).

    Each ordinary token becomes a target with `probability`; a target is replaced by [MASK] 80% of the
    time, by a random ordinary token 10%, and kept 10%. Special and padding tokens are never targets;
    labels are IGNORE_INDEX everywhere except at targets. At least one target is chosen per batch so the
    loss is always defined. `draws` (of `masking_draws`) replaces drawing from `generator`.
    """
    specials = torch.tensor(sorted(set(special_ids)), dtype=torch.long)
    ordinary = ordinary_ids(special_ids, vocab_size)  # random replacements are never special tokens
    chosen_draw, action, replacement = draws if draws is not None else masking_draws(input_ids.shape, len(ordinary), generator)
    candidate = ~torch.isin(input_ids, specials)
    chosen = (chosen_draw < probability) & candidate
    if not chosen.any() and candidate.any():
        chosen.view(-1)[candidate.view(-1).nonzero()[0]] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    masked = torch.where(chosen & (action < 0.8), torch.full_like(input_ids, mask_id), input_ids)
    masked = torch.where(chosen & (action >= 0.8) & (action < 0.9), ordinary[replacement], masked)
    return masked, labels


def target_positions(labels: torch.Tensor) -> torch.Tensor:
    """Flat indices (n_targets,) of the masked-LM targets in (batch, seq) labels."""
    return (labels.reshape(-1) != IGNORE_INDEX).nonzero().squeeze(1)


def mlm_batch(input_ids: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """A masked-LM micro-batch: (batch, seq) ids and labels, this batch's target count, and the flat positions
    of its targets. Training sums the counts of all processes' parts (MaskedLMModule) to normalise the loss.

    The positions are found here, on the host, so that the device never has to report how many targets a
    batch holds (a boolean index would stop the host at every step until the device caught up).
    """
    positions = target_positions(labels)
    return {"input_ids": input_ids, "labels": labels, "n_targets": torch.tensor(len(positions)), "target_positions": positions}


def _tokenise(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    return tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]


def derived_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (seed, micro-batch number, ...), the same on every machine."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)
    return int(state[0]) >> 1


def permuted(positions: np.ndarray, n: int, key: int) -> np.ndarray:
    """Where a keyed pseudo-random permutation of [0, n) sends each of `positions`, without building it.

    A 4-round Feistel network on the smallest even number of bits that holds n, with cycle walking (values that
    land at n or beyond are permuted again until they fall inside): a bijection of [0, n) in O(1) memory, so an
    epoch's row order costs nothing whatever the corpus size (torch.randperm would hold 8 bytes a row).
    """
    bits = max(2, int(n - 1).bit_length())
    half = (bits + 1) // 2
    mask = np.uint64((1 << half) - 1)
    round_keys = np.random.SeedSequence([int(key)]).generate_state(4, dtype=np.uint64)
    out = np.asarray(positions, dtype=np.uint64).copy()
    todo = np.ones(len(out), dtype=bool)
    with np.errstate(over="ignore"):  # the round function multiplies modulo 2^64 on purpose
        while todo.any():
            left, right = out[todo] >> np.uint64(half), out[todo] & mask
            for k in round_keys:
                mixed = (right + k) * np.uint64(0x9E3779B97F4A7C15)
                mixed ^= mixed >> np.uint64(29)
                mixed *= np.uint64(0xBF58476D1CE4E5B9)
                mixed ^= mixed >> np.uint64(32)
                left, right = right, left ^ (mixed & mask)
            out[todo] = (left << np.uint64(half)) | right
            todo = out >= np.uint64(n)
    return out.astype(np.int64)


class PackedMLMBatches(Dataset):
    """Micro-batch number m -> this rank's share of the m-th global micro-batch of packed rows, masked.

    Everything is a function of (seed, m): epoch e = m // batches_per_epoch takes the rows in a permutation
    keyed by (seed, e) (`permuted`); the mask of the whole global micro-batch is drawn from (seed, m) and each
    rank reads only its own rows and keeps its slice of the draws. So a resumed run that starts at
    m = global_step x accumulate draws exactly the batches and masks of an uninterrupted run, 1 or N processes
    with the same global batch see the same rows, and the ranks' rows are disjoint. `rows` is any table of
    packed rows indexed by an array of row numbers (token_shards.PackedRows, or an in-memory tensor).
    """

    def __init__(
        self,
        rows: Any,
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        masking: dict[str, Any],
    ) -> None:
        self.rows = rows  # (n_rows, row_length)
        self.row_length = int(rows.shape[1])
        self.batch_size = batch_size
        self.global_batch = batch_size * world_size
        self.rank = rank
        self.seed = seed
        self.masking = masking
        self.n_ordinary = len(ordinary_ids(masking["special_ids"], masking["vocab_size"]))
        self.batches_per_epoch = len(rows) // self.global_batch
        if self.batches_per_epoch == 0:
            raise DoclifeError(
                f"pretrain: {len(rows)} packed rows cannot fill one global micro-batch of {self.global_batch} rows "
                "(lower batch_size or max_length, or add documents)"
            )

    def __len__(self) -> int:
        return self.batches_per_epoch

    def row_numbers(self, m: int) -> np.ndarray:
        """The rows this rank reads for micro-batch m, (batch_size,)."""
        epoch, position = divmod(int(m), self.batches_per_epoch)
        first = position * self.global_batch + self.rank * self.batch_size
        return permuted(np.arange(first, first + self.batch_size), len(self.rows), derived_seed(self.seed, epoch, 1))

    def __getitem__(self, m: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(derived_seed(self.seed, m, 2))
        draws = masking_draws((self.global_batch, self.row_length), self.n_ordinary, generator)  # (global_batch, L)
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        rows = self.rows[self.row_numbers(m)]  # (batch_size, L): only this rank's rows are read
        masked, labels = mask_tokens(rows, draws=tuple(d[mine] for d in draws), **self.masking)
        # Every row is full: no attention_mask, so attention runs unmasked (SDPA's fastest path).
        return mlm_batch(masked, labels)


class FromStep(Sampler[int]):
    """Micro-batch numbers start, start+1, ... without end; `start` is read when iteration begins."""

    def __init__(self, start: Callable[[], int]) -> None:
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return itertools.count(self.start())


class MaskedLMDataModule(L.LightningDataModule):
    """Packed train rows streamed from the token shards beside the tokenizer, with masks drawn from (seed,
    micro-batch); the first `validation_rows` packed validation rows with a fixed mask."""

    def __init__(
        self,
        tokenizer_dir: Path,
        tokenizer: Any,
        max_length: int,
        batch_size: int,
        mask_probability: float,
        seed: int,
        validation_rows: int = 4096,
        content_sha256: str | None = None,
    ) -> None:
        super().__init__()
        self.tokenizer_dir = Path(tokenizer_dir)
        self.content_sha256 = content_sha256  # the snapshot the shards must encode (None: not checked)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.mask_probability = mask_probability
        self.seed = seed
        self.validation_rows = validation_rows
        self.masking = {
            "special_ids": list(tokenizer.all_special_ids),
            "mask_id": tokenizer.mask_token_id,
            "vocab_size": len(tokenizer),
            "probability": mask_probability,
        }
        self.train_rows: PackedRows | None = None
        self.val_batches: list[dict[str, torch.Tensor]] = []

    def setup(self, stage: str | None = None) -> None:
        if self.train_rows is not None:
            return
        # Opening checks every shard (there, whole, this tokenizer's) and reads no row.
        train = TokenShards.open(self.tokenizer_dir, "train", self.content_sha256).packed_rows(self.max_length)
        if not len(train):
            raise DoclifeError(f"{self.tokenizer_dir / SHARDS_DIR}: no packed row of {self.max_length} tokens in the "
                               "train split (add documents or lower pretrain.max_length)")
        self.train_rows = train
        validation = TokenShards.open(self.tokenizer_dir, "validation", self.content_sha256).packed_rows(self.max_length)
        val_rows = validation[np.arange(min(len(validation), self.validation_rows))]  # (n_val, L), read once
        # One mask for all validation rows, then batches: the targets do not depend on the batch size.
        masked_rows, label_rows = mask_tokens(val_rows, generator=torch.Generator().manual_seed(self.seed), **self.masking)
        for start in range(0, len(val_rows), self.batch_size):
            masked, labels = masked_rows[start : start + self.batch_size], label_rows[start : start + self.batch_size]
            self.val_batches.append(mlm_batch(masked, labels))

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        dataset = PackedMLMBatches(
            self.train_rows, self.batch_size, trainer.global_rank, trainer.world_size, self.seed, self.masking
        )
        # Data position = optimizer steps already taken (restored from the checkpoint before this is called).
        sampler = FromStep(lambda: trainer.global_step * trainer.accumulate_grad_batches)
        # batch_size=None: the dataset already returns whole micro-batches. On the CPU, reading a micro-batch's
        # rows from the page cache and masking them cost less than worker processes; on a GPU one worker reads
        # and masks the next batches while the device computes, into pinned memory, so the step never waits.
        on_gpu = trainer.strategy.root_device.type == "cuda"
        return DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=int(on_gpu), pin_memory=on_gpu,
                          prefetch_factor=4 if on_gpu else None, persistent_workers=on_gpu)

    def val_dataloader(self) -> DataLoader | list:
        # Pretraining turns Lightning's distributed sampler off (the train batches shard themselves), so every
        # rank scores all validation rows: the same number on every rank, and cheap at this size.
        return DataLoader(self.val_batches, batch_size=None, shuffle=False)


class LengthGroupedBatches(Sampler[list[int]]):
    """An epoch's batches of item indices, each batch of items of about the same length.

    The epoch's items (all of them shuffled, or with `weights` as many weighted draws with replacement) are
    cut into chunks of `group` batches; each chunk is sorted by length and cut into batches, and the batches
    are shuffled. A batch is padded to its longest item, so grouping leaves little padding: on the
    online_shopping reviews 97% of a batch's positions hold tokens, against 39% in shuffled batches (the
    Hugging Face Trainer's `group_by_length` works the same way).

    Epoch e draws from (seed, e): the same batches after a resume. Each pass counts as the next epoch, so
    where Lightning's `set_epoch` does not reach this sampler (under ddp it wraps it and deals its batches out
    to the processes) the epochs still follow from the one it starts at.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, weights: torch.Tensor | None = None,
                 group: int = 50) -> None:
        self.lengths = torch.as_tensor(lengths, dtype=torch.long)
        self.batch_size, self.seed, self.weights, self.group = batch_size, seed, weights, group
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch, 4))
        self.epoch += 1
        n = len(self.lengths)
        if self.weights is None:
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        chunk = self.batch_size * self.group  # whole batches: only the epoch's last batch can be short
        batches = []
        for start in range(0, n, chunk):
            part = order[start : start + chunk]
            part = part[torch.argsort(self.lengths[part], descending=True, stable=True)]
            batches += [part[i : i + self.batch_size].tolist() for i in range(0, len(part), self.batch_size)]
        for k in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[k]


class ItemRows(Dataset):
    """`items` indexed by a whole batch of indices at once, for a sampler that yields batches."""

    def __init__(self, items: list) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, rows: list[int]) -> list:
        return [self.items[i] for i in rows]


class TokenizedDocs(Sequence):
    """Tokenised documents and their label ids in three flat arrays: item i is (ids, label).

    About 4 bytes a token and 16 a document, where a list of Python int lists takes 30-40 bytes a token: the
    snapshot's text is never held, and its ids stay a small fraction of it.
    """

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, labels: np.ndarray) -> None:
        self.ids, self.offsets, self.labels = ids, offsets, labels  # (n_tokens,), (n_docs + 1,), (n_docs,)

    @classmethod
    def concatenate(cls, parts: list[tuple[list[list[int]], list[int]]]) -> TokenizedDocs:
        """From batches of (ids per document, label per document)."""
        docs = [np.asarray(ids, dtype=np.int32) for batch, _ in parts for ids in batch]
        lengths = np.array([len(d) for d in docs], dtype=np.int64)
        ids = np.concatenate(docs) if docs else np.empty(0, dtype=np.int32)
        labels = np.array([y for _, batch in parts for y in batch], dtype=np.int64)
        return cls(ids, np.concatenate([[0], np.cumsum(lengths)]), labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[list[int], int]:  # type: ignore[override]
        return self.ids[self.offsets[i] : self.offsets[i + 1]].tolist(), int(self.labels[i])

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, order: np.ndarray) -> TokenizedDocs:
        """The documents `order` names, in that order (a copy of the arrays)."""
        order = np.asarray(order, dtype=np.int64)
        lengths = self.lengths()[order]
        pieces = [self.ids[self.offsets[i] : self.offsets[i + 1]] for i in order]
        ids = np.concatenate(pieces) if pieces else self.ids[:0]
        return TokenizedDocs(ids, np.concatenate([[0], np.cumsum(lengths)]), self.labels[order])


class ClassificationDataModule(L.LightningDataModule):
    """Train and validation documents whose label is in `labels`, as (input_ids, attention_mask, labels)."""

    def __init__(
        self,
        snapshot_dir: Path,
        tokenizer: Any,
        labels: list[str],
        max_length: int,
        batch_size: int,
        balanced_sampling: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.snapshot_dir = Path(snapshot_dir)
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.label_to_id = {label: i for i, label in enumerate(self.labels)}
        self.max_length = max_length
        self.batch_size = batch_size
        self.balanced_sampling = balanced_sampling
        self.seed = seed
        self.train_items = TokenizedDocs.concatenate([])
        self.val_items = TokenizedDocs.concatenate([])
        self.class_counts: list[int] = []
        self.n_ignored = 0

    def setup(self, stage: str | None = None) -> None:
        if len(self.train_items):
            return
        # The snapshot is read a batch at a time and kept only as token ids (TokenizedDocs).
        parts: dict[str, list[tuple[list[list[int]], list[int]]]] = {"train": [], "validation": []}
        for frame in iter_split(self.snapshot_dir, parts, ["text", "label", "split"]):
            known = frame["label"].isin(self.labels)
            self.n_ignored += int((~known).sum())
            for split, target in parts.items():
                part = frame[known & (frame["split"] == split)]
                if len(part):
                    ids = _tokenise(self.tokenizer, part["text"].tolist(), self.max_length)
                    target.append((ids, [self.label_to_id[x] for x in part["label"]]))
        for split in parts:
            if not parts[split]:
                raise no_rows(self.snapshot_dir, f"the {split} split with a label in {self.labels}")
        self.train_items = TokenizedDocs.concatenate(parts["train"])
        validation = TokenizedDocs.concatenate(parts["validation"])
        # Longest first: validation batches then hold documents of about the same length (the order of the
        # validation documents changes no metric).
        self.val_items = validation.take(np.argsort(-validation.lengths(), kind="stable"))
        self.class_counts = np.bincount(self.train_items.labels, minlength=len(self.labels)).tolist()

    def class_weights(self) -> torch.Tensor:
        """Inverse-frequency weights (mean 1 over present classes); a class absent from train gets 0."""
        if not self.class_counts:
            raise DoclifeError("class weights requested before setup")
        counts = torch.tensor(self.class_counts, dtype=torch.float)
        present = counts > 0
        weights = torch.zeros_like(counts)
        weights[present] = counts[present].sum() / (present.sum() * counts[present])
        return weights

    def collate(self, items: list[tuple[list[int], int]]) -> dict[str, torch.Tensor]:
        ids, attention = pad_ids([seq for seq, _ in items], self.tokenizer.pad_token_id)
        return {"input_ids": ids, "attention_mask": attention, "labels": torch.tensor([y for _, y in items], dtype=torch.long)}

    def train_dataloader(self) -> DataLoader:
        weights = None
        if self.balanced_sampling:
            # Each document drawn with probability 1 / (its label's count): every label fills the same share
            # of an epoch.
            counts = self.class_counts
            weights = 1.0 / torch.tensor(counts, dtype=torch.double)[torch.from_numpy(self.train_items.labels)]
        batches = LengthGroupedBatches(self.train_items.lengths().tolist(), self.batch_size, self.seed, weights)
        # A run resumed at epoch e draws epoch e's batches. Lightning draws a resumed run's first epoch before it
        # calls set_epoch, and under ddp its set_epoch reaches only its own wrapper around this sampler.
        batches.set_epoch(self.trainer.current_epoch if self.trainer is not None else 0)
        # batch_size=None: the sampler yields whole batches, and under ddp Lightning deals them out to the processes
        # (given as a batch_sampler, Lightning would rebuild it around a distributed sampler of single items).
        return DataLoader(ItemRows(self.train_items), batch_size=None, sampler=batches, collate_fn=self.collate)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_items, batch_size=self.batch_size, shuffle=False, collate_fn=self.collate)
