"""engine.mode ray: the data stages on a real local Ray with 2 CPUs write what engine.mode local writes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import data_stages, sharded_corpus

from data_checks.check import check
from data_checks.config import EngineConfig, IngestConfig, ValidateConfig
from data_checks.engines import map_batches
from data_checks.io import DoclifeError

ray = pytest.importorskip("ray")

BATCH_ROWS = 400  # several batches, so the batches really run on both workers


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_writes_the_same_snapshot_quarantine_and_findings(tmp_path: Path, local_ray: None) -> None:
    source = sharded_corpus(tmp_path / "shards")
    local = data_stages(source, tmp_path / "local", EngineConfig(batch_rows=BATCH_ROWS))
    on_ray = data_stages(source, tmp_path / "ray", EngineConfig(batch_rows=BATCH_ROWS, mode="ray"))
    assert on_ray["manifest"] == local["manifest"]
    for name in ("cleaned", "fixes", "validated", "quarantine", "findings"):
        pd.testing.assert_frame_equal(on_ray[name], local[name], obj=name)
    # The corpus-wide measures saw rows from every batch: planted near copies and flipped labels were found.
    found = set(local["findings"]["rule"])
    assert {"near_duplicate", "label_noise", "duplicate_exact"} <= found, found
    assert len(local["quarantine"]) + len(local["validated"]) == len(pd.read_parquet(tmp_path / "local/ingested.parquet"))


def test_check_on_ray_reports_what_check_on_local_does(tmp_path: Path, local_ray: None) -> None:
    source = sharded_corpus(tmp_path / "shards")
    reading = IngestConfig(text_column="text", label_column="label")
    summaries = {mode: check(source, reading, ValidateConfig(), tmp_path / mode, engine=EngineConfig(batch_rows=BATCH_ROWS, mode=mode))
                 for mode in ("local", "ray")}
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ray/report.parquet"),
                                  pd.read_parquet(tmp_path / "local/report.parquet"))
    assert {k: v for k, v in summaries["ray"].items() if k not in ("report", "data_docs")} == \
        {k: v for k, v in summaries["local"].items() if k not in ("report", "data_docs")}


def test_batches_come_back_in_row_order_as_the_objects_returned(tmp_path: Path, local_ray: None) -> None:
    frame = pd.DataFrame({"text": ["a", 3, None, "b"] * 250})  # a number and a null stay what they are
    engine = EngineConfig(batch_rows=64, mode="ray")
    parts = list(map_batches(lambda batch: batch, frame, engine, "clean"))
    assert [p.index[0] for p in parts] == list(range(0, 1000, 64))
    pd.testing.assert_frame_equal(pd.concat(parts), frame)
    pd.DataFrame({"n": range(1000)}).to_parquet(tmp_path / "t.parquet", row_group_size=100)
    starts = [int(p.index[0]) for p in map_batches(lambda batch: batch, tmp_path / "t.parquet", engine, "clean")]
    assert starts == list(range(0, 1000, 100))  # whole row groups, read on the workers


def test_a_bad_batch_on_a_worker_is_the_one_line_error_local_mode_gives(local_ray: None) -> None:
    def check(batch: pd.DataFrame) -> pd.DataFrame:
        if batch.index[0] >= 128:
            raise DoclifeError(f"<frame>: row {batch.index[0]} is bad")
        return batch

    with pytest.raises(DoclifeError, match=r"^<frame>: row 128 is bad$"):
        list(map_batches(check, pd.DataFrame({"n": range(300)}), EngineConfig(batch_rows=64, mode="ray"), "clean"))


def test_an_unknown_engine_mode_is_one_line() -> None:
    with pytest.raises(DoclifeError, match="engine: mode must be one of local, ray, got 'spark'"):
        EngineConfig(mode="spark")
