"""Atomic file output and the one error type a user sees.

Every stage writes through these helpers: the output is built under a temporary name beside its
destination and renamed into place, so a crash leaves either the old or the new version, never half.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


class DoclifeError(Exception):
    """A problem with the user's input or configuration; its message is one line naming the file and the problem."""


def first_line(exc: BaseException) -> str:
    """A library exception's reason for a DoclifeError: its message's first line, or its type when it has none."""
    message = str(exc).strip()
    return message.splitlines()[0] if message else type(exc).__name__


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Yield an empty temporary directory beside `path`; swap it in for `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            # Two renames: the old version stays whole until the new one is complete.
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def relative_if_inside(path: Path | str, root: Path | str) -> str:
    """`path` relative to `root` when inside it (it then moves with the workspace), else as it is."""
    path, root = Path(path).absolute(), Path(root).absolute()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def recorded_path(path: Path | str) -> str:
    """A path as a summary records it: relative to the working directory when inside it (a stage runs in
    its workspace's root), so a workspace that moves or is cloned still points at its own files."""
    return relative_if_inside(path, Path.cwd())


def write_json(path: Path | str, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _unreadable(path: Path, err: BaseException) -> DoclifeError:
    return DoclifeError(f"{path}: cannot read as Parquet: {' '.join(str(err).split())[:300]}")


def read_stage_input(path: Path | str, stage: str) -> pd.DataFrame:
    """A Parquet table an earlier stage wrote; a missing or damaged file is a one-line error naming that stage."""
    path = Path(path)
    if not path.is_file():
        raise DoclifeError(f"{path}: file not found (run the {stage} stage first)")
    try:
        return pd.read_parquet(path)
    except Exception as err:  # pyarrow raises many unrelated types for a damaged file
        raise _unreadable(path, err) from None


def stage_input_batches(path: Path | str, stage: str, rows: int, columns: list[str] | None = None
                        ) -> Iterator[pd.DataFrame]:
    """The table an earlier stage wrote, `rows` rows at a time, each batch indexed by its rows' positions in the
    whole table; a missing or damaged file is a one-line error naming that stage (a missing one at once)."""
    path = Path(path)
    if not path.is_file():
        raise DoclifeError(f"{path}: file not found (run the {stage} stage first)")
    try:
        # pre_buffer keeps every row group it read cached: memory would grow with the table (pyarrow 26).
        parquet = pq.ParquetFile(path, pre_buffer=False)
    except (OSError, pa.ArrowException) as err:
        raise _unreadable(path, err) from None

    def batches() -> Iterator[pd.DataFrame]:
        start = 0
        try:
            for batch in parquet.iter_batches(batch_size=rows, columns=columns):
                frame = batch.to_pandas()
                frame.index = pd.RangeIndex(start, start + len(frame))
                start += len(frame)
                yield frame
        except (OSError, pa.ArrowException) as err:
            raise _unreadable(path, err) from None

    return batches()


@contextmanager
def parquet_writer(path: Path | str, schema: pa.Schema) -> Iterator[Callable[[pd.DataFrame], None]]:
    """Yield `write(frame)`, which appends a batch of rows to `path` in `schema`; the file appears, whole, only
    when the block succeeds (an empty file still has the schema)."""
    with atomic_path(path) as tmp:
        writer = pq.ParquetWriter(tmp, schema)
        try:
            yield lambda frame: writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
        finally:
            writer.close()


def write_parquet(path: Path | str, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
