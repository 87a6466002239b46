"""DataModules: tokenise the snapshot once in `setup`, pad each batch to its own longest sequence.

Masked-LM batches are masked dynamically (a fresh mask every time a document is drawn); the validation
split is masked once with a fixed seed so validation losses are comparable across steps and runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as L
import torch
from torch.utils.data import DataLoader

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


def _tokenise(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    return tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]


class MaskedLMDataModule(L.LightningDataModule):
    """Train-split documents with dynamic masking; validation-split documents with a fixed mask."""

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
        self.special_ids = list(tokenizer.all_special_ids)
        self.train_ids: list[list[int]] = []
        self.val_items: list[tuple[list[int], list[int]]] = []  # (masked ids, labels) per document

    def setup(self, stage: str | None = None) -> None:
        if self.train_ids:
            return
        frame = read_split(self.snapshot_dir, ["train", "validation"])
        train = frame.loc[frame["split"] == "train", "text"].tolist()
        require_rows(frame[frame["split"] == "train"], self.snapshot_dir, "the train split")
        self.train_ids = _tokenise(self.tokenizer, train, self.max_length)
        val_ids = _tokenise(self.tokenizer, frame.loc[frame["split"] == "validation", "text"].tolist(), self.max_length)
        generator = torch.Generator().manual_seed(self.seed)
        for seq in val_ids:
            ids = torch.tensor([seq], dtype=torch.long)  # (1, seq)
            masked, labels = mask_tokens(
                ids, self.special_ids, self.tokenizer.mask_token_id, len(self.tokenizer), self.mask_probability, generator
            )
            self.val_items.append((masked[0].tolist(), labels[0].tolist()))

    def collate(self, sequences: list[list[int]]) -> dict[str, torch.Tensor]:
        ids, attention = pad_ids(sequences, self.tokenizer.pad_token_id)
        # The global RNG (seeded by seed_everything) draws the mask: fresh per draw yet reproducible.
        masked, labels = mask_tokens(
            ids, self.special_ids, self.tokenizer.mask_token_id, len(self.tokenizer), self.mask_probability
        )
        return {"input_ids": masked, "attention_mask": attention, "labels": labels}

    def collate_fixed(self, items: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        ids, attention = pad_ids([masked for masked, _ in items], self.tokenizer.pad_token_id)
        labels, _ = pad_ids([labels for _, labels in items], IGNORE_INDEX)
        return {"input_ids": ids, "attention_mask": attention, "labels": labels}

    def train_dataloader(self) -> DataLoader:
        # In-memory token lists and a cheap collate: worker processes would cost more than they save.
        return DataLoader(self.train_ids, batch_size=self.batch_size, shuffle=True, collate_fn=self.collate, drop_last=False)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_items, batch_size=self.batch_size, shuffle=False, collate_fn=self.collate_fixed)


class ClassificationDataModule(L.LightningDataModule):
    """Train and validation documents whose label is in `labels`, as (input_ids, attention_mask, labels)."""

    def __init__(self, snapshot_dir: Path, tokenizer: Any, labels: list[str], max_length: int, batch_size: int) -> None:
        super().__init__()
        self.snapshot_dir = Path(snapshot_dir)
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.label_to_id = {label: i for i, label in enumerate(self.labels)}
        self.max_length = max_length
        self.batch_size = batch_size
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
        return DataLoader(self.train_items, batch_size=self.batch_size, shuffle=True, collate_fn=self.collate)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_items, batch_size=self.batch_size, shuffle=False, collate_fn=self.collate)
