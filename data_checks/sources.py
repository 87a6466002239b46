"""Where a corpus comes from: one file, a directory of files, or a glob of them, each optionally compressed.

A source resolves to its files in a fixed order (sorted by their path under the source), each with the name
the canonical table's `source` column records for it: its path relative to the directory (or to the glob's
fixed prefix), or, for a single file, its name. Compression is read from the last suffix (`.gz`, `.zst`) and
undone by pyarrow's codecs; the format from the suffix before it (`.jsonl.gz` is gzip-compressed JSONL).
"""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from data_checks.io import DoclifeError, first_line

FORMAT_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
                   ".pq": "parquet"}
COMPRESSION_SUFFIXES = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_GLOB_MAGIC = frozenset("*?[")


@dataclass(frozen=True)
class SourceFile:
    """One file of a source: where it is, the name rows from it are recorded under, and how to read it."""

    path: Path
    name: str
    format: str
    compression: str | None  # a pyarrow codec name, or None for a plain file

    def blocks(self, size: int = 1 << 20) -> Iterator[bytes]:
        """The file's content, decompressed, `size` bytes at a time; a damaged archive is a one-line error
        naming the file."""
        import pyarrow as pa

        try:
            with pa.input_stream(str(self.path), compression=self.compression) as stream:
                while block := stream.read(size):
                    yield block
        except (OSError, pa.ArrowException) as err:
            what = f"decompress as {self.compression}" if self.compression else "read"
            raise DoclifeError(f"{self.path}: cannot {what}: {first_line(err)}") from None


def is_glob(source: str | Path) -> bool:
    return any(ch in _GLOB_MAGIC for ch in str(source))


def _glob_root(pattern: str) -> Path:
    """The directory a glob's matches are named relative to: its longest prefix without a wildcard."""
    fixed = []
    for part in Path(pattern).parts:
        if is_glob(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _hidden(path: Path, root: Path) -> bool:
    # .gitignore, .DS_Store, a DVC or editor temp file: never part of a corpus.
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def describe(path: Path, name: str, forced_format: str = "auto") -> SourceFile:
    """`path` as a SourceFile: its compression from the last suffix, its format from the one before it
    (or `forced_format` when it is not "auto")."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = COMPRESSION_SUFFIXES.get(suffixes[-1]) if suffixes else None
    inner = suffixes[:-1] if compression else suffixes
    fmt = forced_format if forced_format != "auto" else FORMAT_SUFFIXES.get(inner[-1] if inner else "")
    if fmt is None:
        raise DoclifeError(
            f"{path}: unsupported format {''.join(path.suffixes) or '(no extension)'!r} (expected one of "
            f"{', '.join(sorted(FORMAT_SUFFIXES))}, optionally followed by {' or '.join(sorted(COMPRESSION_SUFFIXES))}, "
            "or set ingest.format)")
    if fmt == "parquet" and compression:
        raise DoclifeError(f"{path}: a compressed Parquet file; Parquet compresses its own pages, store it as .parquet")
    return SourceFile(path, name, fmt, compression)


def _listing(source: str | Path) -> tuple[Path, list[Path]]:
    """(the directory names are relative to, the source's files in order); one line when there are none."""
    text = str(source)
    if is_glob(text):
        paths = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not paths:
            raise DoclifeError(f"{source}: no file matches")
        return _glob_root(text), paths
    path = Path(source)
    if path.is_file():
        return path.parent, [path]
    if not path.exists():
        raise DoclifeError(f"{source}: file or directory not found")
    if not path.is_dir():
        raise DoclifeError(f"{source}: not a regular file or directory")
    paths = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p, path))
    if not paths:
        raise DoclifeError(f"{source}: a directory with no corpus files")
    return path, paths


def source_files(source: str | Path, forced_format: str = "auto") -> list[SourceFile]:
    """The files of `source` (a file, a directory read recursively, or a glob), in order, each described;
    a one-line error when there are none or one has a format doclife cannot read."""
    root, paths = _listing(source)
    return [describe(p, p.relative_to(root).as_posix(), forced_format) for p in paths]


def fingerprint(source: str | Path) -> str:
    """Each file's name, size and modification time, hashed: a new, removed or rewritten file changes it,
    and nothing is read."""
    root, paths = _listing(source)
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def require_trackable(source: str | Path) -> str | Path:
    """`source` when DVC can track it as the ingest stage's dependency (a file or a directory), else one line."""
    if is_glob(source):
        raise DoclifeError(f"{source}: a glob cannot be a workspace's ingest.source, as DVC tracks a file or a "
                           "directory; name the directory (every corpus file under it is read)")
    return source
