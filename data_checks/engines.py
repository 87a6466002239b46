"""Where a data stage's per-row work runs: in the stage's own process (`engine.mode: local`) or on Ray (`ray`).

A stage hands each batch of its input table to a function of that batch alone (clean a batch, measure and
sketch a batch); what needs the whole corpus at once (grouping, the GX runs, writing the outputs) stays in the
stage's process, over compact per-row results (data_checks/out_of_core.py). `map_batches` is that one seam:
locally it calls the function batch by batch; on Ray, Ray Data reads the batches on the cluster's workers
(whole row groups of the stage's Parquet input, or slices of an in-memory frame put in the object store),
maps them there and streams the results back in row order. Either way the stage sees the same results in the
same order, so its outputs are the same rows.

Ray is an optional extra (`pip install 'doclife[ray]'`). `engine.ray_address` (or RAY_ADDRESS) names an existing
cluster; with neither, the stage starts a Ray on this machine for its own run. A cluster's workers must see the
stage's files at the same paths (a shared file system) and have doclife installed.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from data_checks.config import EngineConfig
from data_checks.io import DoclifeError, stage_input_batches
from data_checks.reuse import Store, key_of

T = TypeVar("T")


def map_batches(fn: Callable[[pd.DataFrame], T], source: Path | pd.DataFrame, engine: EngineConfig, stage: str,
                columns: list[str] | None = None, reuse: bool = False) -> Iterator[T]:
    """`fn(batch)` for every batch of `source` (a Parquet table `stage` wrote, or a frame), in row order.

    Each batch is indexed by its rows' positions in the table. Locally a batch has `engine.batch_rows` rows; on
    Ray it is a run of whole row groups of about as many (a frame: the same slices), so a caller takes a
    batch's rows from `fn`'s result, never from a count of batches. On Ray the results come back pickled, as
    the very objects `fn` returned: their types and values do not depend on the engine.

    With `reuse` (for an `fn` whose result depends on the batch and its bound arguments alone) and
    `engine.reuse` set, a batch whose rows, positions and settings an earlier run saw gets that run's result
    back instead of a new computation (data_checks/reuse.py)."""
    if reuse and engine.reuse:
        store = Store(engine.reuse, _name(fn))
        for key, result in map_batches(_Reusing(fn, store), source, engine, stage, columns):
            store.used.add(key)  # on Ray the worker's store is another object
            yield result
        store.prune()
        return
    if engine.mode == "local":
        if isinstance(source, pd.DataFrame):
            batches = _slices(source, engine.batch_rows)
        else:
            batches = stage_input_batches(source, stage, engine.batch_rows, columns)
        yield from map(fn, batches)
        return
    yield from _on_ray(fn, source, engine, stage, columns)


def _name(fn: Callable[..., Any]) -> str:
    target = fn.func if isinstance(fn, partial) else fn
    return f"{target.__module__}.{target.__qualname__}"


class _Reusing:
    """`fn` through a store: (the batch's key, the kept result, or fn's, then kept)."""

    def __init__(self, fn: Callable[[pd.DataFrame], T], store: Store) -> None:
        self.fn, self.store = fn, store
        self.settings = (_name(fn), fn.args, fn.keywords) if isinstance(fn, partial) else (_name(fn),)

    def __call__(self, batch: pd.DataFrame) -> tuple[str, T]:
        key = key_of(self.settings, batch)
        kept = self.store.get(key)
        if kept is None:
            kept = (self.fn(batch),)
            self.store.put(key, kept)
        return key, kept[0]


def _slices(frame: pd.DataFrame, rows: int) -> Iterator[pd.DataFrame]:
    """A frame `rows` rows at a time, each slice indexed by its rows' positions."""
    frame = frame.reset_index(drop=True)
    return (frame.iloc[lo:lo + rows] for lo in range(0, len(frame), rows))


# ----------------------------------------------------------------------------------------------------------
# Ray


def _ray(engine: EngineConfig) -> Any:
    """The ray module, connected to the configured cluster (or to a Ray this process starts)."""
    try:
        import ray
    except ImportError:
        raise DoclifeError("engine.mode is ray but Ray is not installed (pip install 'doclife[ray]')") from None
    if not ray.is_initialized():
        address = engine.ray_address or os.environ.get("RAY_ADDRESS") or None
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
                     configure_logging=False)
        except ConnectionError as err:
            raise DoclifeError(f"engine.ray_address: cannot reach the Ray cluster at {address}: {err}") from None
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # results in row order, as the local engine gives them
    context.enable_progress_bars = False
    return ray


def _row_group_pieces(path: Path, rows: int) -> list[dict[str, Any]]:
    """Runs of consecutive row groups of about `rows` rows each: one read, one task, on a worker."""
    meta = pq.ParquetFile(path).metadata
    pieces, group, start, size = [], [], 0, 0
    for g in range(meta.num_row_groups):
        group.append(g)
        size += meta.row_group(g).num_rows
        if size >= rows or g == meta.num_row_groups - 1:
            pieces.append({"path": str(path), "row_groups": list(group), "start": start})
            start, group, size = start + size, [], 0
    return pieces


def _on_ray(fn: Callable[[pd.DataFrame], T], source: Path | pd.DataFrame, engine: EngineConfig, stage: str,
            columns: list[str] | None) -> Iterator[T]:
    ray = _ray(engine)
    if isinstance(source, pd.DataFrame):
        # Slices go to the object store pickled, so their values stay the very objects the frame holds.
        refs = [ray.put(part) for part in _slices(source, engine.batch_rows)]
        pieces: list[dict[str, Any]] = [{"slice": k} for k in range(len(refs))]

        def read(piece: dict[str, Any]) -> pd.DataFrame:
            return ray.get(refs[int(piece["slice"][0])])
    else:
        stage_input_batches(source, stage, engine.batch_rows)  # a missing or damaged file fails here, at once
        pieces = _row_group_pieces(Path(source), engine.batch_rows)

        def read(piece: dict[str, Any]) -> pd.DataFrame:
            batch = (pq.ParquetFile(piece["path"][0], pre_buffer=False)
                     .read_row_groups(list(piece["row_groups"][0]), columns=columns).to_pandas())
            batch.index = pd.RangeIndex(int(piece["start"][0]), int(piece["start"][0]) + len(batch))
            return batch

    if not pieces:
        return

    def run(piece: dict[str, Any]) -> dict[str, np.ndarray]:
        try:
            result = fn(read(piece))
        except DoclifeError as err:  # Ray would wrap it in a remote traceback: it is raised below, as it is
            result = err
        # One row per piece holding the result pickled: Ray Data would turn an array-like result into a tensor.
        return {"result": np.array([pickle.dumps(result, protocol=5)], dtype=object)}

    dataset = ray.data.from_items(pieces, override_num_blocks=len(pieces)).map_batches(
        run, batch_size=1, batch_format="numpy")
    for results in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for result in map(pickle.loads, results["result"]):
            if isinstance(result, DoclifeError):
                raise result
            yield result
