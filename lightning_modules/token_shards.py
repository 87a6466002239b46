"""Token shards: the snapshot encoded once, memory-mapped by every training process.

The tokenize stage writes, beside the tokenizer (`models/tokenizer/shards/`), each split's documents as a flat
stream of token ids, every document [CLS] ... [SEP], cut into shard files of about `shard_tokens` tokens at
document boundaries (nanoGPT's `train.bin`, Megatron's indexed datasets):

    train-00000.bin   32-byte header, then n_tokens ids (uint16 when the vocabulary fits, else uint32)
    index.json        the tokenizer's sha256, the dtype, and per split its shards' files and token counts

Packing needs nothing more: row r of a shard is its ids [r * L, (r + 1) * L), so any row length can be read
from the same shards and a shard's incomplete last row is dropped. Opening the shards reads their headers
only (O(shards)); a process touches just the rows it is handed, so start-up time and memory do not grow with
the corpus. A numpy memmap is the whole reader: random access to any row, which the exact resume and the
world-size-independent batches (data.PackedMLMBatches) need, with nothing to install. Each header names the
tokenizer whose ids it holds, so a shard that is truncated or comes from another tokenizer stops the run
before any step with one line naming the file.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_checks.io import DoclifeError, read_json, write_json
from data_checks.snapshot import read_manifest
from lightning_modules.snapshot import iter_split

SHARDS_DIR = "shards"
INDEX_FILE = "index.json"
FORMAT = "doclife-token-shards-1"
MAGIC = b"DLTOKEN1"
# magic, id width in bytes, reserved, number of ids, the first 8 bytes of the tokenizer's sha256
HEADER = struct.Struct("<8sIIQ8s")
ENCODED_SPLITS = ("train", "validation")  # what pretraining reads; finetuning and evaluation read the snapshot


def tokenizer_sha256(tokenizer_dir: Path) -> str:
    """sha256 of the tokenizer's `tokenizer.json`: the identity its ids mean something under."""
    path = Path(tokenizer_dir) / "tokenizer.json"
    if not path.is_file():
        raise DoclifeError(f"{path}: missing (run the tokenize stage first)")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


class _ShardWriter:
    """One split's stream of document ids, written to shard files of about `shard_tokens` ids each."""

    def __init__(self, out_dir: Path, split: str, dtype: np.dtype, digest: bytes, shard_tokens: int) -> None:
        self.out_dir, self.split, self.dtype, self.digest, self.shard_tokens = out_dir, split, dtype, digest, shard_tokens
        self.pending: list[np.ndarray] = []
        self.pending_tokens = 0
        self.shards: list[dict[str, Any]] = []
        self.documents = 0

    def add(self, documents: list[list[int]]) -> None:
        for ids in documents:
            self.pending.append(np.asarray(ids, dtype=self.dtype))
            self.pending_tokens += len(ids)
            self.documents += 1
            if self.pending_tokens >= self.shard_tokens:
                self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        name = f"{self.split}-{len(self.shards):05d}.bin"
        with (self.out_dir / name).open("wb") as handle:
            handle.write(HEADER.pack(MAGIC, self.dtype.itemsize, 0, self.pending_tokens, self.digest))
            for ids in self.pending:
                handle.write(ids.tobytes())
        self.shards.append({"file": name, "tokens": self.pending_tokens, "documents": len(self.pending)})
        self.pending, self.pending_tokens = [], 0


def encode_snapshot(tokenizer: Any, snapshot_dir: Path, out_dir: Path, tokenizer_digest: str,
                    shard_tokens: int, batch_rows: int = 16384) -> dict[str, Any]:
    """Encode the train and validation documents of the snapshot into shards in `out_dir` (created).

    `tokenizer` is the Hugging Face fast tokenizer just saved; its Rust backend encodes a batch of documents at
    a time, whole ([CLS] ... [SEP], never truncated: packing cuts the stream into rows). Memory holds one batch
    and one shard. Returns the token and document counts per split.
    """
    backend = tokenizer.backend_tokenizer
    backend.no_truncation()
    backend.no_padding()
    dtype = _dtype(len(tokenizer))
    digest = bytes.fromhex(tokenizer_digest)[:8]
    out_dir.mkdir(parents=True, exist_ok=True)
    writers = {split: _ShardWriter(out_dir, split, dtype, digest, shard_tokens) for split in ENCODED_SPLITS}
    for frame in iter_split(snapshot_dir, ENCODED_SPLITS, ["text", "split"], batch_rows):
        for split, writer in writers.items():
            texts = frame.loc[frame["split"] == split, "text"].tolist()
            if texts:
                writer.add([encoding.ids for encoding in backend.encode_batch(texts, add_special_tokens=True)])
    for writer in writers.values():
        writer.flush()
    index = {
        "format": FORMAT,
        "tokenizer_sha256": tokenizer_digest,
        "content_sha256": read_manifest(snapshot_dir).get("content_sha256"),
        "dtype": dtype.name,
        "splits": {split: {"tokens": sum(s["tokens"] for s in w.shards), "documents": w.documents, "shards": w.shards}
                   for split, w in writers.items()},
    }
    write_json(out_dir / INDEX_FILE, index)
    return {f"{split}_tokens": index["splits"][split]["tokens"] for split in ENCODED_SPLITS} | {
        "shards": sum(len(w.shards) for w in writers.values()), "id_dtype": dtype.name}


def _open_shard(path: Path, dtype: np.dtype, tokens: int, digest: bytes) -> np.memmap:
    """The ids of one shard file, memory-mapped, after checking its header and size against the index."""
    if not path.is_file():
        raise DoclifeError(f"{path}: token shard missing (re-run the tokenize stage)")
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(HEADER.size)
    if len(head) < HEADER.size or head[:8] != MAGIC:
        raise DoclifeError(f"{path}: not a doclife token shard (bad header)")
    _, width, _, count, shard_digest = HEADER.unpack(head)
    if shard_digest != digest:
        raise DoclifeError(f"{path}: token shard written by another tokenizer than this one (re-run the tokenize stage)")
    if width != dtype.itemsize or count != tokens:
        raise DoclifeError(f"{path}: token shard does not match {INDEX_FILE} ({count} ids of {width} bytes, "
                           f"the index says {tokens} of {dtype.itemsize})")
    if size != HEADER.size + tokens * dtype.itemsize:
        raise DoclifeError(f"{path}: token shard truncated or padded ({size} bytes, expected "
                           f"{HEADER.size + tokens * dtype.itemsize})")
    if tokens == 0:
        return np.empty(0, dtype=dtype)  # type: ignore[return-value]
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER.size, shape=(tokens,))


@dataclass
class TokenShards:
    """One split's shards, opened: `packed_rows(L)` gives its packed rows without reading any of them."""

    directory: Path
    split: str
    streams: list[np.ndarray]  # each shard's ids, (n_tokens,), memory-mapped

    @classmethod
    def open(cls, tokenizer_dir: Path, split: str, content_sha256: str | None = None) -> TokenShards:
        """The `split` shards that the tokenize stage wrote beside the tokenizer in `tokenizer_dir`.

        Checks, before any step, that every shard is there, whole, and holds this tokenizer's ids (and, given
        `content_sha256`, that they encode that snapshot).
        """
        directory = Path(tokenizer_dir) / SHARDS_DIR
        index_path = directory / INDEX_FILE
        if not index_path.is_file():
            raise DoclifeError(f"{index_path}: no token shards beside the tokenizer (re-run the tokenize stage)")
        index = read_json(index_path)
        if index.get("format") != FORMAT or split not in index.get("splits", {}):
            raise DoclifeError(f"{index_path}: not a {FORMAT} index with a {split!r} split")
        expected = tokenizer_sha256(tokenizer_dir)
        if index.get("tokenizer_sha256") != expected:
            raise DoclifeError(f"{index_path}: shards encoded with another tokenizer than {Path(tokenizer_dir) / 'tokenizer.json'} "
                               "(re-run the tokenize stage)")
        if content_sha256 is not None and index.get("content_sha256") != content_sha256:
            raise DoclifeError(f"{index_path}: shards encode another snapshot ({str(index.get('content_sha256'))[:12]}, "
                               f"not {content_sha256[:12]}; re-run the tokenize stage)")
        dtype, digest = np.dtype(index["dtype"]), bytes.fromhex(expected)[:8]
        streams = [_open_shard(directory / s["file"], dtype, int(s["tokens"]), digest) for s in index["splits"][split]["shards"]]
        return cls(directory, split, streams)

    @property
    def n_tokens(self) -> int:
        return sum(len(s) for s in self.streams)

    def packed_rows(self, row_length: int) -> PackedRows:
        return PackedRows(self.streams, row_length)


class PackedRows:
    """The packed rows of a list of token streams: row i of the concatenated shards, each shard cut into rows
    of `row_length` and its incomplete tail dropped. Indexing with an array of row numbers gathers only those
    rows, as (k, row_length) int64."""

    def __init__(self, streams: Iterable[np.ndarray], row_length: int) -> None:
        self.streams = [s for s in streams if len(s) >= row_length]
        self.row_length = row_length
        counts = np.array([len(s) // row_length for s in self.streams], dtype=np.int64)
        self.first_row = np.concatenate([[0], np.cumsum(counts)])  # (n_shards + 1,)

    def __len__(self) -> int:
        return int(self.first_row[-1])

    @property
    def shape(self) -> tuple[int, int]:
        """(n_rows, row_length), as the in-memory tensor of the same rows has it."""
        return len(self), self.row_length

    def __getitem__(self, rows: np.ndarray | torch.Tensor | slice) -> torch.Tensor:
        if isinstance(rows, slice):
            rows = np.arange(len(self))[rows]
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row out of range 0..{len(self) - 1}")
        out = np.empty((len(rows), self.row_length), dtype=np.int64)
        shard_of = np.searchsorted(self.first_row, rows, side="right") - 1
        span = np.arange(self.row_length)
        for shard in np.unique(shard_of):
            here = shard_of == shard
            starts = (rows[here] - self.first_row[shard]) * self.row_length
            out[here] = self.streams[shard][starts[:, None] + span]  # (k, row_length) gathered from the memmap
        return torch.from_numpy(out)

    def __getstate__(self) -> dict[str, Any]:
        # A DataLoader worker started by spawn gets the rows pickled: send each memmap as its file and offset
        # (numpy would pickle a memmap as a copy of all its data).
        streams = [(str(s.filename), s.dtype.str, s.offset, len(s)) if isinstance(s, np.memmap) else s for s in self.streams]
        return {"streams": streams, "row_length": self.row_length, "first_row": self.first_row}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.row_length, self.first_row = state["row_length"], state["first_row"]
        self.streams = [np.memmap(s[0], dtype=np.dtype(s[1]), mode="r", offset=s[2], shape=(s[3],)) if isinstance(s, tuple)
                        else s for s in state["streams"]]

    def in_memory(self) -> torch.Tensor:
        """Every row, read into one (n_rows, row_length) tensor (the benchmark's in-memory reference)."""
        return self[np.arange(len(self))]
