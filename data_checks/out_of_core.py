"""Corpus-wide grouping in bounded memory: DuckDB queries over the Parquet files a stage writes.

A data stage holds one batch of rows at a time; what needs the whole corpus at once (which ids repeat,
which texts are exact copies of an earlier one) is a GROUP BY over a column or two of the stage's own
output. DuckDB runs it under `memory_limit_mb` and spills to a temporary directory beside that output when
the groups do not fit, so the stage's memory stays flat as the corpus grows. The answers are small (the
repeated keys), and the stage applies them in a second pass over its batches.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from data_checks.config import EngineConfig


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"  # a view's definition cannot take parameters


def query(sql: str, engine: EngineConfig, beside: Path, into: Path | None = None, **files: Path) -> pd.DataFrame:
    """Run `sql`, in which each keyword of `files` names the Parquet file of that name. The result is returned
    when small; with `into` it is written there as Parquet instead (and an empty frame returned).

    Spilled data goes to a temporary directory next to `beside` (the stage's output), removed afterwards."""
    import duckdb

    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{beside.name}.spill.", dir=beside.parent) as spill:
        with duckdb.connect(config={"memory_limit": f"{engine.memory_limit_mb}MB", "temp_directory": spill,
                                    "preserve_insertion_order": False}) as con:
            for name, path in files.items():
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet({_quoted(path)})")
            if into is None:
                return con.execute(sql).df()
            con.execute(f"COPY ({sql}) TO {_quoted(into)} (FORMAT parquet)")
            return pd.DataFrame()


def aligned(result: Path, column: str, batches: Iterator[pd.DataFrame], rows: int
            ) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """Each batch of a table (indexed by position) with the rows of `result` whose `column`, a position in the
    table, falls in that batch; `result` is sorted by `column` and read `rows` rows at a time."""
    parquet = pq.ParquetFile(result, pre_buffer=False)
    parts = (b.to_pandas() for b in parquet.iter_batches(batch_size=rows))
    have = parquet.schema_arrow.empty_table().to_pandas()
    exhausted = False
    for batch in batches:
        end = batch.index[-1] + 1 if len(batch) else batch.index.start
        # Read on until the result passes this batch's last position, or ends.
        while not exhausted and (have.empty or have[column].iloc[-1] < end):
            part = next(parts, None)
            exhausted = part is None
            if part is not None:
                have = pd.concat([have, part], ignore_index=True)
        cut = int(np.searchsorted(have[column].to_numpy(), end))
        yield batch, have.iloc[:cut]
        have = have.iloc[cut:].reset_index(drop=True)
