"""Exact duplicates, near duplicates, train/test leakage and conflicting labels, as row measures.

`find_duplicates` measures a corpus table (doc_id, text, label, split) and returns numeric measure columns
plus pointer columns (0-based row positions in the input); `duplicate_rules` declares the RowRules over them.

Two texts are *the same* when their normalised keys are equal: NFKC, then Unicode case folding, then every
run of whitespace collapsed to one space and the ends stripped. They are *near duplicates* when the Jaccard
similarity of their shingle sets, estimated by MinHash, is at least `threshold`. Shingles are built from
tokens, punctuation and symbols ignored: a run of letters/digits is one word token, and every character of
a script written without spaces (Han, kana, Thai, ...) is a token of its own. A text made mostly of such
characters is shingled in `char_ngram`-grams, any other text in `word_ngram`-grams; a text with fewer tokens
than that is one shingle, and a text with no token at all (only punctuation or emoji) is one shingle of its
whole normalised key.

Duplicates are judged within a split, keep-first in input order: a later copy points at the first one.
A copy in another split is leakage instead, and the copy in the *earlier* split of train < validation < test
is flagged, so evaluation text stays where it is and training never sees it.

The sketch is one-permutation MinHash: one 64-bit hash per shingle picks one of `num_bands * rows_per_band`
bins and competes for its minimum, so the cost grows with the shingles, not with shingles x bins. It is
computed with numpy over `chunk_rows` texts at a time (rolling hashes over the concatenated code points);
across chunks only a 64-bit key, the band hashes and 8 bits per bin of each row are kept (`Sketches`: with
the defaults 8 bytes a row in memory and, with a spill directory, 260 on disk: the LSH pass and the
verification of its candidates read them back a bounded block at a time). Bands are hashed after filling each
empty bin from the next non-empty one, so short texts still fall into buckets; two texts sharing a bucket
are kept when their Jaccard similarity, estimated from the bins not empty in both, reaches `threshold`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from data_checks.config import SPLITS, need
from data_checks.rulebook import QUARANTINE, WARN, RowRule
from data_checks.text_arrays import chunk_bounds

MEASURES = (
    "duplicate_of", "exact_duplicate",
    "near_duplicate_of", "near_duplicate_similarity", "near_duplicate",
    "leak_of", "split_leakage",
    "labels_per_text", "conflicting_label", "labels_per_cluster", "near_duplicate_conflicting_label",
)
"""The columns `find_duplicates` returns, in order."""

_U64 = np.uint64
_EMPTY = np.uint32(0xFFFFFFFF)
_BASE_CHAR = 0x100000001B3  # odd bases: invertible modulo 2**64, so rolling hashes can be re-based
_BASE_TOKEN = 0x9E3779B97F4A7C15
_NO_BYTE = 255  # 8-bit signature code of an empty bin


@dataclass
class DuplicatesConfig:
    """How duplicates, near duplicates and leakage are found (`validate.duplicates` in params.yaml)."""

    word_ngram: int = 2
    """Words per shingle for space-separated text; 2 keeps a one-word edit of a 20-word review near (J ~ 0.8)."""
    char_ngram: int = 3
    """Characters per shingle for text written without spaces (Chinese, Japanese, Thai)."""
    num_bands: int = 20
    """LSH bands; with `rows_per_band` they set the sketch size (num_bands * rows_per_band bins)."""
    rows_per_band: int = 5
    """Bins per band; 20 x 5 makes a pair with Jaccard 0.7 a candidate with probability 0.97."""
    threshold: float = 0.7
    """Estimated Jaccard similarity from which two different texts are near duplicates."""
    seed: int = 1
    """Seed of the hash functions; the same seed always gives the same result."""
    chunk_rows: int = 32_768
    """Texts shingled and sketched at a time; the memory of the text work grows with it (~150 MB here)."""
    chunk_chars: int = 2_000_000
    """Characters shingled and sketched at a time, at most (a longer text is a chunk of its own): on long
    documents this, not chunk_rows, bounds the text work's memory (about 80 bytes a character)."""
    bucket_compare: int = 4
    """Each text in an LSH bucket is compared with at most this many of the bucket's earliest texts."""

    def __post_init__(self) -> None:
        section = "validate.duplicates"
        for name in ("word_ngram", "char_ngram", "num_bands", "rows_per_band", "chunk_rows", "chunk_chars",
                     "bucket_compare"):
            need(getattr(self, name) >= 1, section, f"{name} must be >= 1, got {getattr(self, name)}")
        need(0.0 < self.threshold <= 1.0, section, f"threshold must be in (0, 1], got {self.threshold}")
        need(self.num_bands * self.rows_per_band <= 1024, section,
              "num_bands * rows_per_band must be <= 1024 (the sketch size)")
        need(self.chunk_rows * self.num_bands * self.rows_per_band < 1 << 32, section,
              "chunk_rows * num_bands * rows_per_band must be < 2**32")

    @property
    def num_perm(self) -> int:
        """Bins of the MinHash sketch."""
        return self.num_bands * self.rows_per_band


def duplicate_rules(cfg: DuplicatesConfig | None = None) -> list[RowRule]:
    """The row rules over `find_duplicates`' measures, with their default severities."""
    cfg = cfg or DuplicatesConfig()
    # Exact copies are the cleaning step's to drop (clean.mark_duplicates, rule duplicate_exact): it keeps
    # copies whose labels conflict, which duplicate_conflicting_label below then sets aside.
    return [
        RowRule("near_duplicate", "near_duplicate",
                f"no text is a near duplicate (estimated Jaccard >= {cfg.threshold:g}) of an earlier text of its "
                "split (near_duplicate <= {max_value}; see near_duplicate_of)",
                max_value=0, severity=WARN, family="inconsistency"),
        RowRule("split_leakage", "split_leakage",
                "a text and its near duplicates stay in one split; the train (else validation) copy of a text "
                "also found in a later split is set aside (split_leakage <= {max_value}; see leak_of)",
                max_value=0, severity=QUARANTINE, family="inconsistency"),
        RowRule("duplicate_conflicting_label", "conflicting_label",
                "rows with the same normalised text carry one label (conflicting_label <= {max_value})",
                max_value=0, severity=QUARANTINE, family="label_noise"),
        RowRule("near_duplicate_conflicting_label", "near_duplicate_conflicting_label",
                "near-duplicate texts carry one label (near_duplicate_conflicting_label <= {max_value}); "
                "a changed word can flip a label, so this warns",
                max_value=0, severity=WARN, family="label_noise"),
    ]


def find_duplicates(frame: pd.DataFrame, cfg: DuplicatesConfig | None = None) -> pd.DataFrame:
    """Measure every row of `frame` (columns text, and label / split when present); see MEASURES.

    Pointers are 0-based row positions in `frame`. Rows with null or blank text get NA everywhere; later
    exact copies get NA near-duplicate measures (they are already duplicates); rows outside
    train/validation/test get NA leakage measures. Label measures look across splits: `labels_per_text`
    counts the distinct non-null labels of all rows with the same text (`conflicting_label` when > 1, on
    every copy); `labels_per_cluster` does the same over a near-duplicate cluster (texts linked by
    near-duplicate pairs), and `near_duplicate_conflicting_label` marks every row of a cluster of two or more
    texts that carries more than one label.
    """
    cfg = cfg or DuplicatesConfig()
    sketches = Sketches(cfg, len(frame))
    sketches.add(frame["text"])
    out = measure_duplicates(sketches, codes(frame, "split"), codes(frame, "label")[0])
    result = pd.DataFrame(index=frame.index)
    for name in MEASURES:
        values = out[name]
        missing = np.isnan(values) if name == "near_duplicate_similarity" else values < 0  # -1: not applicable
        result[name] = (pd.arrays.FloatingArray(values, missing) if name == "near_duplicate_similarity"
                        else pd.arrays.IntegerArray(values.astype(np.int64), missing))
    return result


def codes(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, list]:
    """Integer codes of frame[column] (-1 for null, and everywhere when there is no such column) and the values
    they stand for."""
    if column not in frame:
        return np.full(len(frame), -1, np.int64), []
    found, uniques = pd.factorize(frame[column])
    return found.astype(np.int64), list(uniques)


@dataclass
class TextSketch:
    """What the duplicate measures keep of a batch of texts: one batch's part of `Sketches`. Computed from the
    texts alone (`sketch_texts`), so any worker can compute it for any batch."""

    key: np.ndarray
    """(n,) uint64 normalised-text key; 0: null or blank text."""
    sig8: np.ndarray
    """(n, num_perm) uint8: 8 bits per MinHash bin (b-bit minwise hashing); 255 marks an empty bin."""
    bands: np.ndarray
    """(n, num_bands) uint64 LSH band hashes."""


def sketch_texts(text: pd.Series, cfg: DuplicatesConfig) -> TextSketch:
    """The keys, signatures and band hashes of `text`, at most `cfg.chunk_rows` texts and `cfg.chunk_chars`
    characters at a time."""
    column = _as_arrow(text)
    n = len(column)
    out = TextSketch(np.zeros(n, _U64), np.full((n, cfg.num_perm), _NO_BYTE, np.uint8),
                     np.zeros((n, cfg.num_bands), _U64))
    hashes = _hashes_of(cfg.seed, cfg.rows_per_band, cfg.num_bands)
    chars = pc.fill_null(pc.utf8_length(column), 0).to_numpy(zero_copy_only=False)
    for lo, hi in chunk_bounds(chars, cfg.chunk_rows, cfg.chunk_chars):
        chunk = column.slice(lo, hi - lo)
        present = lo + np.flatnonzero(pc.is_valid(chunk).to_numpy(zero_copy_only=False))
        if not present.size:
            continue
        cp, lens = _normalise(chunk.take(present - lo) if present.size < len(chunk) else chunk)
        keys = _key_hash(cp, lens, hashes)
        sig = _signature(cp, lens, keys, cfg, hashes)
        out.key[present] = keys
        out.sig8[present] = np.where(sig == _EMPTY, np.uint32(_NO_BYTE), sig % np.uint32(255)).astype(np.uint8)
        out.bands[present] = _band_hashes(_rotate(sig), cfg, hashes)
    return out


class Sketches:
    """The key and sketch of every text of a corpus, added batch by batch in row order.

    The keys stay in memory (8 bytes a row). With `spill_dir` the rest goes to disk as it comes: the 8-bit
    signatures (num_perm bytes a row) to one file, read back `_BLOCK_BYTES` at a time when candidate pairs
    are verified, and the band hashes (8 bytes a band a row) to one file per band, since the LSH pass reads
    one band at a time; the candidate pairs are shelved there too. Without it everything stays in memory.
    """

    def __init__(self, cfg: DuplicatesConfig, rows: int, spill_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.rows = rows
        self.spill_dir = None if spill_dir is None else Path(spill_dir)
        self.key = np.zeros(rows, _U64)  # 0: null or blank text
        self._filled = 0
        if self.spill_dir is None:
            self._sig8 = np.full((rows, cfg.num_perm), _NO_BYTE, np.uint8)
            self._bands = np.zeros((rows, cfg.num_bands), _U64)
        else:
            self._sig8_file = self.spill_dir / "sig8.u8"
            self._band_files = [self.spill_dir / f"band-{b:04d}.u64" for b in range(cfg.num_bands)]
            for path in (self._sig8_file, *self._band_files):
                path.write_bytes(b"")

    def add(self, text: pd.Series) -> None:
        """Sketch the next len(text) rows."""
        self.add_sketch(sketch_texts(text, self.cfg))

    def add_sketch(self, sketch: TextSketch) -> None:
        """Keep the sketch of the next len(sketch.key) rows."""
        at = slice(self._filled, self._filled + len(sketch.key))
        self._filled = at.stop
        self.key[at] = sketch.key
        if self.spill_dir is None:
            self._sig8[at] = sketch.sig8
            self._bands[at] = sketch.bands
            return
        with self._sig8_file.open("ab") as f:
            f.write(np.ascontiguousarray(sketch.sig8).tobytes())
        for band, path in enumerate(self._band_files):
            with path.open("ab") as f:
                f.write(np.ascontiguousarray(sketch.bands[:, band]).tobytes())

    def signatures(self, lo: int, hi: int) -> np.ndarray:
        """(rows, num_perm) uint8 signatures of rows lo:hi (hi clipped to the corpus)."""
        assert self._filled == self.rows, (self._filled, self.rows)
        hi = min(hi, self.rows)
        if self.spill_dir is None:
            return self._sig8[lo:hi]
        width = self.cfg.num_perm
        # Read, not memory-mapped: mapped pages once touched count as the process's memory.
        return np.fromfile(self._sig8_file, np.uint8, (hi - lo) * width, offset=lo * width).reshape(hi - lo, width)

    def band(self, band: int, lo: int, hi: int) -> np.ndarray:
        """(hi - lo,) uint64 hashes of one band for rows lo:hi."""
        assert self._filled == self.rows, (self._filled, self.rows)
        if self.spill_dir is None:
            return self._bands[lo:hi, band]
        return np.fromfile(self._band_files[band], _U64, hi - lo, offset=lo * 8)


class _Shelf:
    """Arrays put away under a number and taken back all at once: in memory, or with a directory in one file
    per number, so that what waits to be taken costs disk and not memory."""

    def __init__(self, directory: Path | None, dtype: type, width: int) -> None:
        self.directory, self.dtype, self.width = directory, dtype, width
        self._kept: dict[int, list[np.ndarray]] = {}

    def put(self, number: int, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, self.dtype)
        if self.directory is None:
            self._kept.setdefault(number, []).append(values)
        else:
            with self._path(number).open("ab") as f:
                f.write(values.tobytes())

    def take(self, number: int, rows: int) -> Iterator[np.ndarray]:
        """Everything put under `number`, `rows` rows at a time (arrays of (<= rows, width)); then forgotten."""
        if self.directory is None:
            parts = self._kept.pop(number, [])
            values = np.concatenate(parts) if parts else np.empty((0, self.width), self.dtype)
            for lo in range(0, len(values), rows):
                yield values[lo:lo + rows]
            return
        path = self._path(number)
        if not path.exists():
            return
        row_bytes = np.dtype(self.dtype).itemsize * self.width
        for lo in range(0, path.stat().st_size // row_bytes, rows):
            yield np.fromfile(path, self.dtype, rows * self.width, offset=lo * row_bytes).reshape(-1, self.width)
        path.unlink()

    def _path(self, number: int) -> Path:
        return self.directory / f"pairs-{number:08d}.bin"


_POINTERS = ("duplicate_of", "near_duplicate_of", "leak_of")
_LABEL_COUNTS = ("labels_per_text", "labels_per_cluster")


def measure_duplicates(sketches: Sketches, split: tuple[np.ndarray, list], label_code: np.ndarray
                       ) -> dict[str, np.ndarray]:
    """Every MEASURES column for every sketched row, as arrays (-1, or NaN for the similarity: not applicable).

    `split` is (code per row, the split each code stands for) and `label_code` a code per row (-1: null), as
    `codes` makes them. Each column takes the narrowest type that holds it, since validate keeps them for the
    whole corpus: pointers int32 (int64 from 2**31 rows), label counts int8 (wider only for more than 127
    labels), flags int8; the similarity stays float64, as float32 would round some (0.725) to another
    2-decimal figure: 27 bytes a row in all."""
    n = sketches.rows
    pointer = np.int32 if n <= 2**31 else np.int64
    count = _narrowest_int(int(label_code.max()) + 1 if label_code.size else 0)
    out = {name: np.full(n, -1, pointer if name in _POINTERS else count if name in _LABEL_COUNTS else np.int8)
           for name in MEASURES if name != "near_duplicate_similarity"}
    out["near_duplicate_similarity"] = np.full(n, np.nan)
    valid = np.flatnonzero(sketches.key != 0).astype(pointer)
    if valid.size:
        _measure(sketches, split, label_code, valid, out)
    return out


# ----------------------------------------------------------------------------------------------------------
# Row-level assembly: from per-row keys and sketches to the measure columns.


def _measure(sketches: Sketches, split: tuple[np.ndarray, list], label_code: np.ndarray, rows: np.ndarray,
             out: dict[str, np.ndarray]) -> None:
    # rows: positions of the rows with text. Texts are numbered in order of first appearance and sketched by
    # their first row. Each per-row array here is as narrow as it can be and dropped once used, and groups are
    # found by sorting, not hashing (pandas' hash tables take several times the keys' room): at ten million
    # rows a byte a row is 10 MB.
    index = rows.dtype
    text_id, first = _number(sketches.key[rows], index)
    n_text = first.size
    ta, tb, sim = _near_pairs(sketches, rows[first])
    similarity = out["near_duplicate_similarity"]

    split_code, split_names = split[0][rows], split[1]  # -1: null or no split column
    rank_of = np.array([SPLITS.index(name) if name in SPLITS else -1 for name in split_names] + [-1], np.int8)
    rank = rank_of[split_code]  # 0 train, 1 validation, 2 test, -1 anything else

    # Exact duplicates, keep-first within (split, text); a null split is a split of its own here.
    width = len(split_names) + 1
    code = np.int32 if n_text * width < 2**31 else np.int64  # of a (text, split) pair
    copy, first = _number(text_id.astype(code) * width + split_code + 1, index)
    first_index = first[copy]
    del copy
    dup = first_index != np.arange(rows.size, dtype=index)
    out["duplicate_of"][rows[dup]] = rows[first_index[dup]]
    out["exact_duplicate"][rows] = dup
    del first_index, dup

    # First copies (one per text and split, in row order), and the same sorted by (text, split) to look up
    # the first copies of a text.
    f_pos, f_rank = rows[first], rank[first]
    f_code = (text_id[first].astype(code) * width + split_code[first] + 1).astype(code)
    del first, split_code
    by_code = np.argsort(f_code, kind="stable")
    f_code, f_pos, f_rank = f_code[by_code], f_pos[by_code], f_rank[by_code]
    del by_code
    out["near_duplicate"][f_pos] = 0

    # Near duplicates within a split: for every verified text pair and every split holding both texts, the
    # later first-copy points at the earlier one; each row keeps its earliest such partner.
    if ta.size:
        pair, at_a = _copies_of(ta, f_code, width)
        want = tb[pair].astype(code) * width + (f_code[at_a] - ta[pair].astype(code) * width)
        at_b = np.minimum(np.searchsorted(f_code, want), f_code.size - 1)
        match = f_code[at_b] == want
        pa, pb, pair = f_pos[at_a[match]], f_pos[at_b[match]], pair[match]
        later, earlier = np.maximum(pa, pb), np.minimum(pa, pb)
        order = np.lexsort((earlier, later))
        later, earlier, pair = later[order], earlier[order], pair[order]
        best = np.ones(later.size, bool)  # the earliest partner of each row
        best[1:] = later[1:] != later[:-1]
        out["near_duplicate_of"][later[best]] = earlier[best]
        similarity[later[best]] = sim[pair[best]]
        out["near_duplicate"][later[best]] = 1

    # Leakage: a row is leaked when its text, or a near duplicate of it, has a copy in a later split; it
    # points at the first copy in the latest such split. Candidates are ranked by one code: the latest split
    # first, then the earliest row (positions below 2**40).
    bits = np.int64(40)
    f_best = np.where(f_rank >= 0, (f_rank.astype(np.int64) << bits) | ((1 << bits) - 1 - f_pos.astype(np.int64)), -1)
    best = np.full(n_text, -1, np.int64)
    np.maximum.at(best, f_code // width, f_best)
    for src, dst in ((ta, tb), (tb, ta)):
        which, at = _copies_of(dst, f_code, width)
        np.maximum.at(best, src[which], f_best[at])
    del f_code, f_pos, f_rank, f_best
    best_rank = np.where(best >= 0, best >> bits, -1).astype(np.int8)
    best_pos = np.where(best >= 0, (1 << bits) - 1 - (best & ((1 << bits) - 1)), -1).astype(index)
    del best
    in_split = rank >= 0
    leak = in_split & (rank < best_rank[text_id])
    out["split_leakage"][rows[in_split]] = leak[in_split]
    out["leak_of"][rows[leak]] = best_pos[text_id[leak]]
    del in_split, leak, best_rank, best_pos, rank

    # Labels: distinct non-null labels per text, and per near-duplicate cluster (connected texts).
    label_code = label_code[rows]
    per_text = _distinct(text_id, label_code)
    out["labels_per_text"][rows] = per_text
    out["conflicting_label"][rows] = per_text > 1
    del per_text
    graph = coo_matrix((np.ones(ta.size), (ta, tb)), shape=(n_text, n_text))
    cluster_of_text = connected_components(graph, directed=False)[1]
    cluster = cluster_of_text[text_id]
    del text_id
    per_cluster = _distinct(cluster, label_code)
    texts_in_cluster = np.bincount(cluster_of_text)[cluster]
    out["labels_per_cluster"][rows] = per_cluster
    out["near_duplicate_conflicting_label"][rows] = (texts_in_cluster > 1) & (per_cluster > 1)


def _copies_of(texts: np.ndarray, codes: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(which of `texts`, index in `codes`) for every first copy of each of `texts`; `codes` are the sorted
    text * width + split + 1 of the first copies."""
    lo = np.searchsorted(codes, texts.astype(codes.dtype) * width)
    count = np.searchsorted(codes, (texts.astype(codes.dtype) + 1) * width) - lo
    which = np.repeat(np.arange(texts.size), count)
    return which, np.arange(which.size) - np.repeat(np.cumsum(count) - count - lo, count)


def _number(codes: np.ndarray, index: type) -> tuple[np.ndarray, np.ndarray]:
    """Number the distinct codes in order of first appearance: (the number of each element, the index of
    each number's first element). By a stable sort, which needs a few copies of the codes and no hash table."""
    order = np.argsort(codes, kind="stable")
    ordered = codes[order]
    new = np.empty(codes.size, bool)
    new[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    del ordered
    first = order[new]  # stable: the earliest element of each code
    by_appearance = np.argsort(first)
    number_of = np.empty(first.size, index)
    number_of[by_appearance] = np.arange(first.size, dtype=index)
    first = first[by_appearance].astype(index)
    del by_appearance
    group = np.cumsum(new, dtype=index)
    del new
    group -= 1
    number = np.empty(codes.size, index)
    number[order] = number_of[group]
    return number, first


def _narrowest_int(largest: int) -> type:
    """The narrowest signed integer type that holds 0..largest."""
    return next(t for t in (np.int8, np.int16, np.int32, np.int64) if largest <= np.iinfo(t).max)


def _distinct(groups: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """For each element, the number of distinct non-negative codes in its group."""
    known = codes >= 0
    width = int(codes.max()) + 1 if known.any() else 1
    pairs = np.unique(groups[known].astype(np.int64) * width + codes[known])
    return np.bincount(pairs // width, minlength=int(groups.max()) + 1)[groups]


def _estimate(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Jaccard estimate of row pairs of 8-bit one-permutation signatures (pairs, num_perm).

    Bins empty in both texts carry no information and are left out (Li, Owen & Zhang's OPH estimator);
    two different 8-bit values agree by chance 1 time in 255, which is taken off (b-bit minwise hashing)."""
    x_empty = x == _NO_BYTE
    y_empty = y == _NO_BYTE
    union = (~(x_empty & y_empty)).sum(axis=1)
    both = (~x_empty & ~y_empty).sum(axis=1)
    agree = ((x == y) & ~x_empty).sum(axis=1)
    true_agree = np.maximum(agree - both / 255, 0) / (1 - 1 / 255)
    return np.clip(true_agree / np.maximum(union, 1), 0.0, 1.0)


_BLOCK_BYTES = 1 << 24
"""Signature bytes read at once when candidates are verified; two blocks are held at a time."""
_GROUP_TEXTS = 1 << 21
"""Texts whose band hashes are grouped into buckets at once."""


def _near_pairs(sketches: Sketches, rep: np.ndarray) -> tuple[np.ndarray, ...]:
    """Verified near-duplicate text pairs (a < b, estimated Jaccard >= threshold) from LSH buckets. rep: the
    row sketching each text, in text order. Pairs are returned as text numbers, sorted.

    Memory is bounded by blocks, not by the corpus, so the signatures can stay on disk: each band's buckets
    are grouped a slice of hash values at a time, and every band's candidates are shelved by the pair of
    signature blocks holding their two texts; then each block pair is read once and its candidates verified
    a bounded chunk at a time."""
    cfg = sketches.cfg
    n = rep.size
    index = np.int32 if n < 2**31 else np.int64
    block = max(1, _BLOCK_BYTES // cfg.num_perm)  # signature rows a block
    blocks = -(-sketches.rows // block)
    shelf = _Shelf(sketches.spill_dir, index, 2)
    for band in range(cfg.num_bands):
        for a, b in _band_candidates(sketches, band, rep, cfg.bucket_compare):
            block_pair = rep[a] // block * blocks + rep[b] // block
            order = np.argsort(block_pair, kind="stable")
            block_pair = block_pair[order]
            cut = np.flatnonzero(np.r_[True, block_pair[1:] != block_pair[:-1], True])
            for lo, hi in pairwise(cut):
                at = order[lo:hi]
                shelf.put(int(block_pair[lo]), np.stack([a[at], b[at]], axis=1))
    step = 1 << 16  # candidates verified at once: bounded (pairs, num_perm) temporaries
    found, found_sim = [], []
    for i in range(blocks):
        here = None
        for j in range(i, blocks):  # a < b, so the second text's block is never before the first's
            there = None
            # A pair sharing buckets in several bands is verified each time, as the pass over all bands
            # gives candidates by the hundred million: deduplicating them would cost more than it saves.
            for pairs in shelf.take(i * blocks + j, step):
                if here is None:
                    here = sketches.signatures(i * block, (i + 1) * block)
                if there is None:
                    there = here if j == i else sketches.signatures(j * block, (j + 1) * block)
                sim = _estimate(here[rep[pairs[:, 0]] - i * block], there[rep[pairs[:, 1]] - j * block])
                keep = sim >= cfg.threshold - 1e-9
                found.append(pairs[keep, 0].astype(np.int64) * n + pairs[keep, 1])
                found_sim.append(sim[keep])
    if not found:
        return np.empty(0, index), np.empty(0, index), np.empty(0)
    flat, first = np.unique(np.concatenate(found), return_index=True)
    return (flat // n).astype(index), (flat % n).astype(index), np.concatenate(found_sim)[first]


def _band_candidates(sketches: Sketches, band: int, rep: np.ndarray, compare: int):
    """Candidate pairs (a, b) of one band, as text numbers with a < b: each member of a bucket against the
    bucket's `compare` earliest members. Buckets are grouped one slice of hash values (hash % slices) at a
    time, so that only about _GROUP_TEXTS texts' hashes are held and sorted at once."""
    n = rep.size
    slices = -(-n // _GROUP_TEXTS)
    read = 1 << 20  # band rows read at a time
    for part in range(slices):
        keys, texts = [], []
        for lo in range(0, sketches.rows, read):
            hi = min(lo + read, sketches.rows)
            t_lo, t_hi = np.searchsorted(rep, [lo, hi])
            values = sketches.band(band, lo, hi)[rep[t_lo:t_hi] - lo]
            text = np.arange(t_lo, t_hi, dtype=rep.dtype)
            if slices > 1:
                mine = values % _U64(slices) == part
                values, text = values[mine], text[mine]
            keys.append(values)
            texts.append(text)
        keys, texts = np.concatenate(keys), np.concatenate(texts)
        order = np.argsort(keys, kind="stable")  # stable: a bucket's members stay in text order
        keys = keys[order]
        # Only texts that share their bucket matter, and on real corpora they are few: every array below is
        # as long as they are, not as the slice.
        same = keys[1:] == keys[:-1]
        members = np.flatnonzero(np.r_[False, same] | np.r_[same, False])
        if not members.size:
            continue
        text, keys = texts[order[members]], keys[members]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        sizes = np.diff(np.r_[starts, members.size])
        start_of = np.repeat(starts, sizes)
        rank = np.arange(members.size) - start_of
        for k in range(min(compare, int(sizes.max()) - 1)):
            later = rank > k  # member of rank > k against the bucket's member of rank k
            yield text[start_of[later] + k], text[later]


# ----------------------------------------------------------------------------------------------------------
# Text work, one chunk at a time: normalise, key, shingle, sketch.


def _as_arrow(text: pd.Series) -> pa.Array:
    """The text column as one arrow large_string array (nulls kept; other scalars as their str())."""
    try:
        column = pa.array(text, type=pa.large_string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):
        # Object columns: numbers become their text; lone surrogates (undecodable input) become "?".
        values = [None if v is None or v is pd.NA or v != v else str(v).encode("utf-8", "replace").decode("utf-8")
                  for v in text.to_numpy(object)]
        column = pa.array(values, type=pa.large_string())
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


class _Hashes:
    """The seeded constants of one run, and cached powers of the rolling-hash bases."""

    def __init__(self, salt: np.uint64, band_mult: np.ndarray, band_salt: np.ndarray) -> None:
        self.salt = salt
        self.band_mult = band_mult  # (rows_per_band,) odd uint64 multipliers
        self.band_salt = band_salt  # (num_bands,) uint64
        self._powers: dict[int, tuple[np.ndarray, np.ndarray]] = {}


    def powers(self, base: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """base**i and base**-i modulo 2**64 for i in 0..n (uint64 arithmetic wraps), computed once per run."""
        have = self._powers.get(base)
        if have is None or have[0].size <= n:
            size = n + 1 + n // 8  # chunks differ a little in length: some slack saves recomputing
            fwd = np.empty(size, _U64)
            inv = np.empty(size, _U64)
            fwd[0] = inv[0] = 1
            np.cumprod(np.full(size - 1, base, _U64), out=fwd[1:])
            np.cumprod(np.full(size - 1, pow(base, -1, 1 << 64), _U64), out=inv[1:])
            have = self._powers[base] = (fwd, inv)
        return have


@lru_cache(maxsize=4)
def _hashes_of(seed: int, rows_per_band: int, num_bands: int) -> _Hashes:
    """The constants of a seed (kept per process: their cached powers are worth keeping between batches)."""
    rng = np.random.default_rng(seed)
    big = np.iinfo(np.uint64).max
    return _Hashes(
        salt=_U64(rng.integers(0, big, dtype=np.uint64, endpoint=True)),
        band_mult=rng.integers(0, big, size=rows_per_band, dtype=np.uint64, endpoint=True) | _U64(1),
        band_salt=rng.integers(0, big, size=num_bands, dtype=np.uint64, endpoint=True),
    )


@lru_cache(maxsize=1)
def _char_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per code point: token class (0 separator, 1 word character, 2 character token), whitespace, and
    whether case folding differs from lower-casing (those texts are folded by Python)."""
    size = 0x110000
    covered = 0x30000  # categories beyond the supplementary ideographic plane matter little here
    cls = np.zeros(size, np.uint8)
    cls[:covered] = np.frombuffer(bytes(unicodedata.category(chr(c))[0] in "LNM" for c in range(covered)), np.uint8)
    unspaced = np.zeros(size, bool)
    for lo, hi in ((0x0E00, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x2E80, 0x2FDF), (0x3005, 0x3007),
                   (0x3040, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3FFFF)):
        unspaced[lo:hi + 1] = True
    cls[unspaced & (cls == 1)] = 2
    cls[0x30000:0x40000] = 2
    space = np.zeros(size, bool)
    space[:0x3001] = np.frombuffer(bytes(chr(c).isspace() for c in range(0x3001)), bool)
    folds = np.zeros(size, bool)
    folds[:0x20000] = np.frombuffer(bytes(chr(c).casefold() != chr(c).lower() for c in range(0x20000)), bool)
    return cls, space, folds


def _normalise(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """NFKC + case folding + whitespace collapse of each (non-null) text: (code points of all, length of each)."""
    arr = pc.utf8_lower(pc.utf8_normalize(arr, form="NFKC"))
    cp, lens = _code_points(arr)
    cls, space, folds = _char_tables()
    doc = np.repeat(np.arange(lens.size), lens)
    special = np.unique(doc[folds[cp]])
    if special.size:  # rare (ß, final sigma, ...): Python's full case folding for those texts only
        strings = arr.to_pylist()
        for i in special:
            strings[i] = unicodedata.normalize("NFKC", strings[i].casefold())
        cp, lens = _code_points(pa.array(strings, type=pa.large_string()))
        doc = np.repeat(np.arange(lens.size), lens)
    # Whitespace collapse: keep a space only as the first of a run with non-space text on both sides.
    is_space = space[cp]
    if not is_space.any():
        return cp, lens
    solid = np.flatnonzero(~is_space)
    first_solid = np.full(lens.size, np.iinfo(np.int64).max)
    last_solid = np.full(lens.size, -1)
    if solid.size:
        solid_doc = doc[solid]
        change = solid_doc[1:] != solid_doc[:-1]
        edge = np.flatnonzero(np.r_[True, change])
        first_solid[solid_doc[edge]] = solid[edge]
        edge = np.flatnonzero(np.r_[change, True])
        last_solid[solid_doc[edge]] = solid[edge]
    idx = np.arange(cp.size)
    prev_solid = np.r_[False, ~is_space[:-1]]
    keep = ~is_space | (prev_solid & (idx > first_solid[doc]) & (idx < last_solid[doc]))
    cp = np.where(is_space, np.uint32(0x20), cp)[keep]
    return cp, np.bincount(doc[keep], minlength=lens.size)


def _code_points(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """UTF-32 code points of a large_string array, concatenated, and the length of each string."""
    offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset:arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    raw = data.to_pybytes()[offsets[0]:offsets[-1]] if data is not None else b""
    cp = np.frombuffer(raw.decode("utf-8", "surrogatepass").encode("utf-32-le", "surrogatepass"), np.uint32)
    return cp, pc.utf8_length(arr).to_numpy(zero_copy_only=False).astype(np.int64)


def _span_hash(values: np.ndarray, base: int, start: np.ndarray, end: np.ndarray, hashes: _Hashes) -> np.ndarray:
    """Polynomial hash of values[start:end] for every (start, end), independent of where the span lies."""
    fwd, inv = hashes.powers(base, values.size)
    prefix = np.zeros(values.size + 1, _U64)
    np.cumsum(values.astype(_U64) * fwd[:values.size], out=prefix[1:])
    return (prefix[end] - prefix[start]) * inv[start]


def _mix(x: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser: spreads every input bit over the whole word."""
    x = x ^ (x >> _U64(33))
    x *= _U64(0xFF51AFD7ED558CCD)
    x ^= x >> _U64(33)
    x *= _U64(0xC4CEB9FE1A85EC53)
    x ^= x >> _U64(33)
    return x


def _key_hash(cp: np.ndarray, lens: np.ndarray, hashes: _Hashes) -> np.ndarray:
    """64-bit key of each normalised text; 0 for an empty one (blank text)."""
    ends = np.cumsum(lens)
    h = _span_hash(cp, _BASE_CHAR, ends - lens, ends, hashes)
    h = _mix(h ^ (lens.astype(_U64) * _U64(0x9E3779B97F4A7C15)))
    h[h == 0] = 1
    h[lens == 0] = 0
    return h


def _signature(cp: np.ndarray, lens: np.ndarray, keys: np.ndarray, cfg: DuplicatesConfig,
               hashes: _Hashes) -> np.ndarray:
    """One-permutation MinHash of each text's shingle set: (texts, num_perm) uint32, _EMPTY for empty bins."""
    n, k = lens.size, cfg.num_perm
    doc, shingle = _shingles(cp, lens, keys, cfg, hashes)
    h = _mix(shingle ^ hashes.salt)
    # High 32 bits pick the bin (multiply-shift), low 32 bits are the value. Sorting (cell << 32 | value)
    # puts each cell's minimum first; a sort is cheaper than np.minimum.at's scatter.
    bins = ((h >> _U64(32)) * _U64(k)) >> _U64(32)
    cell_value = ((doc.astype(_U64) * _U64(k) + bins) << _U64(32)) | (h & _U64(0xFFFFFFFF))
    cell_value.sort()
    cell = (cell_value >> _U64(32)).astype(np.int64)
    first = np.r_[True, cell[1:] != cell[:-1]]
    sig = np.full(n * k, _EMPTY, np.uint32)
    sig[cell[first]] = cell_value[first].astype(np.uint32)
    return sig.reshape(n, k)


def _shingles(cp: np.ndarray, lens: np.ndarray, keys: np.ndarray, cfg: DuplicatesConfig,
              hashes: _Hashes) -> tuple[np.ndarray, np.ndarray]:
    """(text index, 64-bit shingle hash) of every shingle of every text; see the module docstring."""
    n = lens.size
    cls_table, _, _ = _char_tables()
    cls = cls_table[cp]
    doc = np.repeat(np.arange(n), lens)
    new_doc = np.zeros(cp.size + 1, bool)  # True where a text starts (and past the end)
    starts = np.cumsum(lens) - lens
    new_doc[starts] = True
    new_doc[cp.size] = True
    word = cls == 1
    word_next = np.r_[word[1:], False] & ~new_doc[1:]
    word_prev = np.r_[False, word[:-1]] & ~new_doc[:-1]
    unspaced = cls == 2
    tok_start = np.flatnonzero(unspaced | (word & ~word_prev))
    tok_end = np.flatnonzero(unspaced | (word & ~word_next)) + 1
    tok_doc = doc[tok_start]
    tok = _mix(_span_hash(cp, _BASE_CHAR, tok_start, tok_end, hashes))
    count = np.bincount(tok_doc, minlength=n)
    n_unspaced = np.bincount(tok_doc, weights=unspaced[tok_start], minlength=n)
    gram = np.where(2 * n_unspaced > count, cfg.char_ngram, cfg.word_ngram)
    gram = np.minimum(gram, np.maximum(count, 1))  # shorter than one shingle: the whole text is one
    tok_first = np.cumsum(count) - count
    local = np.arange(tok.size) - tok_first[tok_doc]
    begin = np.flatnonzero(local <= (count - gram)[tok_doc])
    sh_doc = tok_doc[begin]
    sh = _span_hash(tok, _BASE_TOKEN, begin, begin + gram[sh_doc], hashes)
    bare = np.flatnonzero(count == 0)  # only punctuation / symbols: the whole key is the one shingle
    if bare.size:
        return np.r_[sh_doc, bare], np.r_[sh, keys[bare]]
    return sh_doc, sh


def _rotate(sig: np.ndarray) -> np.ndarray:
    """Densify for banding: an empty bin takes the value of the next non-empty bin to its right, circularly.

    sig: (texts, num_perm); every text has at least one non-empty bin. The fill depends only on the set, so
    equal sets stay equal, and a small edit changes only the bands near the changed bins."""
    empty = sig == _EMPTY
    if not empty.any():
        return sig
    k = sig.shape[1]
    where = np.where(empty, np.int16(k), np.arange(k, dtype=np.int16))
    nxt = np.minimum.accumulate(where[:, ::-1], axis=1)[:, ::-1]  # (texts, num_perm) next non-empty bin
    nxt = np.where(nxt == k, nxt[:, :1], nxt)  # none to the right: wrap to the first non-empty bin
    return np.take_along_axis(sig, nxt.astype(np.intp), axis=1)


def _band_hashes(sig: np.ndarray, cfg: DuplicatesConfig, hashes: _Hashes) -> np.ndarray:
    """(texts, num_bands) uint64: one hash of each band's rows_per_band MinHash values."""
    grid = sig.reshape(sig.shape[0], cfg.num_bands, cfg.rows_per_band).astype(_U64)
    combined = (grid * hashes.band_mult).sum(axis=2, dtype=_U64)  # (texts, num_bands)
    return _mix(combined + hashes.band_salt)
