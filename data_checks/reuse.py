"""Work kept from a stage's earlier runs, found again by everything it was computed from.

A weekly corpus grows by new files, so most of a re-run's files and batches are the ones the last run already
read, cleaned and measured. A stage keeps each such result under a key of all it depends on: the input's own
bytes (a source file's) or values and row positions (a batch's), the function and its settings, and the
data_checks code. A result is therefore reused only where computing it again would give the same one: a
re-run that reuses writes the same outputs as one that recomputes, only sooner.

The store is a directory of the workspace (`engine.reuse`, `.doclife/reuse` in params.yaml; null turns it off),
one folder per kind of result. When a pass over all batches completes, the results it did not use are
deleted, so the store holds about one corpus's worth of each kind. It is a cache, not a record: deleting it
costs one full run, nothing else.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

_PACKAGE = Path(__file__).resolve().parent


@cache
def code_digest() -> bytes:
    """sha256 over every data_checks module: a change anywhere in the stages' code invalidates every result."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.digest()


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def key_of(*parts: Any) -> str:
    """The key of a result computed from `parts` (batches, settings) by the current code.

    Parts are pickled: equal pickles are equal values (a frame's include its index, the rows' positions, and
    its dtypes), so a key is never shared by different inputs; pickling a batch costs a tenth of hashing its
    values row by row.
    """
    digest = hashlib.sha256(code_digest())
    for part in parts:
        digest.update(pickle.dumps(part, protocol=5))
    return digest.hexdigest()


class Store:
    """One kind of result (`kind`: a folder of the store), each kept in a file named by its key."""

    def __init__(self, root: Path | str, kind: str) -> None:
        self.dir = Path(root) / kind
        self.used: set[str] = set()

    def path(self, key: str, suffix: str = ".pkl") -> Path:
        self.used.add(key)
        return self.dir / f"{key}{suffix}"

    def get(self, key: str) -> Any | None:
        """The result kept under `key`, or None (a damaged file counts as none)."""
        path = self.path(key)
        try:
            with path.open("rb") as fh:
                return pickle.load(fh)
        except (OSError, EOFError, pickle.UnpicklingError):
            return None

    def put(self, key: str, value: Any) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".put.", dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(value, fh, protocol=5)
            os.replace(tmp, self.path(key))
        finally:
            Path(tmp).unlink(missing_ok=True)

    def prune(self) -> None:
        """Delete the results this run did not use (their inputs are gone or changed)."""
        if self.dir.is_dir():
            for path in self.dir.iterdir():
                if path.name.split(".")[0] not in self.used:
                    path.unlink(missing_ok=True)
