"""DataModules: tokenise the snapshot once in `setup`.

Masked-LM pretraining packs documents into full rows (no step is spent on padding) and masks dynamically,
with the mask of micro-batch m drawn from (seed, m) so a resumed run draws what an uninterrupted one would.
The validation rows are masked once with a fixed seed so validation losses are comparable across steps and
runs. Classification batches are padded to their own longest document, and each batch holds documents of
about the same length (`LengthGroupedBatches`), so little of a batch is padding.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from data_checks.io import DoclifeError
from lightning_modules.snapshot import read_split, require_rows

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


def mask_tokens(
    input_ids: torch.Tensor,
    special_ids: list[int],
    mask_id: int,
    vocab_size: int,
    probability: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking on (batch, seq) ids: returns (masked input_ids, labels), both (batch, seq).

    Each ordinary token becomes a target with `probability`; a target is replaced by [MASK] 80% of the
    time, by a random ordinary token 10%, and kept 10%. Special and padding tokens are never targets;
    labels are IGNORE_INDEX everywhere except at targets. At least one target is chosen per batch so the
    loss is always defined.
    """
    specials = torch.tensor(sorted(set(special_ids)), dtype=torch.long)
    candidate = ~torch.isin(input_ids, specials)
    chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & candidate
    if not chosen.any() and candidate.any():
        chosen.view(-1)[candidate.view(-1).nonzero()[0]] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))

    action = torch.rand(input_ids.shape, generator=generator)
    to_mask = chosen & (action < 0.8)
    to_random = chosen & (action >= 0.8) & (action < 0.9)
    masked = input_ids.clone()
    masked[to_mask] = mask_id
    # Random replacements come from ordinary tokens only, never from the special tokens.
    every_id = torch.arange(vocab_size)
    ordinary = every_id[~torch.isin(every_id, specials)]
    picks = torch.randint(len(ordinary), (int(to_random.sum()),), generator=generator)
    masked[to_random] = ordinary[picks]
    return masked, labels


def target_positions(labels: torch.Tensor) -> torch.Tensor:
    """Flat indices (n_targets,) of the masked-LM targets in (batch, seq) labels."""
    return (labels.reshape(-1) != IGNORE_INDEX).nonzero().squeeze(1)


def mlm_batch(input_ids: torch.Tensor, labels: torch.Tensor, global_targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """A masked-LM micro-batch: (batch, seq) ids and labels, the global micro-batch's target count (this
    batch's own when it is the whole micro-batch), and the flat positions of this batch's targets.

    The positions are found here, on the host, so that the device never has to report how many targets a
    batch holds (a boolean index would stop the host at every step until the device caught up).
    """
    positions = target_positions(labels)
    if global_targets is None:
        global_targets = torch.tensor(len(positions))
    return {"input_ids": input_ids, "labels": labels, "global_targets": global_targets, "target_positions": positions}


def _tokenise(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    return tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]


def derived_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (seed, micro-batch number, ...), the same on every machine."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)
    return int(state[0]) >> 1


def pack_documents(docs: list[list[int]], row_length: int) -> torch.Tensor:
    """Concatenate tokenised documents (each [CLS] ... [SEP]) and cut the stream into full rows.

    Returns (n_rows, row_length) ids with no padding. A document longer than a row continues in the next
    row; the incomplete tail of the stream is dropped. Attention spans document boundaries inside a row
    (RoBERTa's FULL-SENTENCES packing): the [SEP] between documents marks where one ends.
    """
    stream = torch.tensor([token for doc in docs for token in doc], dtype=torch.long)
    n_rows = len(stream) // row_length
    return stream[: n_rows * row_length].view(n_rows, row_length)


class PackedMLMBatches(Dataset):
    """Micro-batch number m -> this rank's share of the m-th global micro-batch of packed rows, masked.

    Everything is a function of (seed, m): epoch e = m // batches_per_epoch takes the rows in a permutation
    drawn from (seed, e); the mask of the whole global micro-batch is drawn from (seed, m) and each rank keeps
    its slice. So a resumed run that starts at m = global_step x accumulate draws exactly the batches and
    masks of an uninterrupted run, and 1 or N processes with the same global batch see the same rows.
    """

    def __init__(
        self,
        rows: torch.Tensor,
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        masking: dict[str, Any],
    ) -> None:
        self.rows = rows  # (n_rows, row_length)
        self.batch_size = batch_size
        self.global_batch = batch_size * world_size
        self.rank = rank
        self.seed = seed
        self.masking = masking
        self.batches_per_epoch = len(rows) // self.global_batch
        if self.batches_per_epoch == 0:
            raise DoclifeError(
                f"pretrain: {len(rows)} packed rows cannot fill one global micro-batch of {self.global_batch} rows "
                "(lower batch_size or max_length, or add documents)"
            )
        self._epoch = -1
        self._order = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __getitem__(self, m: int) -> dict[str, torch.Tensor]:
        epoch, position = divmod(int(m), self.batches_per_epoch)
        if epoch != self._epoch:
            self._order = torch.randperm(len(self.rows), generator=torch.Generator().manual_seed(derived_seed(self.seed, epoch, 1)))
            self._epoch = epoch
        picked = self._order[position * self.global_batch : (position + 1) * self.global_batch]
        generator = torch.Generator().manual_seed(derived_seed(self.seed, m, 2))
        masked, labels = mask_tokens(self.rows[picked], generator=generator, **self.masking)  # (global_batch, L)
        n_targets = (labels != IGNORE_INDEX).sum()
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        # Every row is full: no attention_mask, so attention runs unmasked (SDPA's fastest path).
        return mlm_batch(masked[mine], labels[mine], n_targets)


class FromStep(Sampler[int]):
    """Micro-batch numbers start, start+1, ... without end; `start` is read when iteration begins."""

    def __init__(self, start: Callable[[], int]) -> None:
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return itertools.count(self.start())


class MaskedLMDataModule(L.LightningDataModule):
    """Packed train rows with masks drawn from (seed, micro-batch); packed validation rows with a fixed mask."""

    def __init__(
        self,
        snapshot_dir: Path,
        tokenizer: Any,
        max_length: int,
        batch_size: int,
        mask_probability: float,
        seed: int,
    ) -> None:
        super().__init__()
        self.snapshot_dir = Path(snapshot_dir)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.mask_probability = mask_probability
        self.seed = seed
        self.masking = {
            "special_ids": list(tokenizer.all_special_ids),
            "mask_id": tokenizer.mask_token_id,
            "vocab_size": len(tokenizer),
            "probability": mask_probability,
        }
        self.train_rows = torch.empty(0, max_length, dtype=torch.long)
        self.val_batches: list[dict[str, torch.Tensor]] = []
        self.n_train_docs = 0

    def _packed(self, texts: list[str]) -> torch.Tensor:
        if not texts:  # an empty split (a corpus without validation rows): no rows, rather than a tokenizer error
            return torch.empty(0, self.max_length, dtype=torch.long)
        # Whole documents, no truncation: packing cuts the stream into rows, so nothing is thrown away.
        docs = self.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        return pack_documents(docs, self.max_length)

    def setup(self, stage: str | None = None) -> None:
        if len(self.train_rows):
            return
        frame = read_split(self.snapshot_dir, ["train", "validation"])
        require_rows(frame[frame["split"] == "train"], self.snapshot_dir, "the train split")
        train = frame.loc[frame["split"] == "train", "text"].tolist()
        self.n_train_docs = len(train)
        self.train_rows = self._packed(train)
        val_rows = self._packed(frame.loc[frame["split"] == "validation", "text"].tolist())
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
        # batch_size=None: the dataset already returns whole micro-batches. On the CPU, in-memory rows and cheap
        # masking make worker processes cost more than they save; on a GPU one worker masks the next batches
        # while the device computes, into pinned memory, so the step never waits for the host.
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
        self.train_items: list[tuple[list[int], int]] = []
        self.val_items: list[tuple[list[int], int]] = []
        self.class_counts: list[int] = []
        self.n_ignored = 0

    def setup(self, stage: str | None = None) -> None:
        if self.train_items:
            return
        frame = read_split(self.snapshot_dir, ["train", "validation"])
        known = frame["label"].isin(self.labels)
        self.n_ignored = int((~known).sum())
        frame = frame[known]
        for split, target in (("train", self.train_items), ("validation", self.val_items)):
            part = frame[frame["split"] == split]
            require_rows(part, self.snapshot_dir, f"the {split} split with a label in {self.labels}")
            ids = _tokenise(self.tokenizer, part["text"].tolist(), self.max_length)
            target.extend(zip(ids, (self.label_to_id[x] for x in part["label"])))
        # Longest first: validation batches then hold documents of about the same length (the order of the
        # validation documents changes no metric).
        self.val_items.sort(key=lambda item: len(item[0]), reverse=True)
        self.class_counts = [0] * len(self.labels)
        for _, y in self.train_items:
            self.class_counts[y] += 1

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
            weights = torch.tensor([1.0 / counts[y] for _, y in self.train_items], dtype=torch.double)
        batches = LengthGroupedBatches([len(ids) for ids, _ in self.train_items], self.batch_size, self.seed, weights)
        # A run resumed at epoch e draws epoch e's batches. Lightning draws a resumed run's first epoch before it
        # calls set_epoch, and under ddp its set_epoch reaches only its own wrapper around this sampler.
        batches.set_epoch(self.trainer.current_epoch if self.trainer is not None else 0)
        # batch_size=None: the sampler yields whole batches, and under ddp Lightning deals them out to the processes
        # (given as a batch_sampler, Lightning would rebuild it around a distributed sampler of single items).
        return DataLoader(ItemRows(self.train_items), batch_size=None, sampler=batches, collate_fn=self.collate)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_items, batch_size=self.batch_size, shuffle=False, collate_fn=self.collate)
