"""params.yaml → typed configs: the shipped file loads, mistakes are one-line errors naming the file."""

import subprocess
import sys
from pathlib import Path

import pytest

from data_checks.io import DoclifeError
from flows.config import load_params, set_param

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_params_load():
    params = load_params(ROOT / "params.yaml")
    assert params.ingest.text_column == "text"
    assert params.promote.primary_metric == "macro_f1"
    assert len(params.validate.labels) >= 4


def test_only_the_validate_stage_imports_great_expectations():
    # Each stage runs in its own process and reads all of params.yaml (the drift settings included);
    # GX's import alone takes 2-3 s on two cores, sklearn's 0.5 s.
    stage_modules = ["flows.cli", "data_checks.ingest", "data_checks.clean", "data_checks.snapshot",
                     "lightning_modules.tokenizer", "lightning_modules.train", "lightning_modules.evaluate",
                     "flows.promote"]
    code = ("import importlib, sys\n"
            "from flows.config import load_params\n"
            "load_params('params.yaml')\n"
            "assert 'sklearn' not in sys.modules, 'params.yaml alone imports sklearn'\n"
            f"for name in {stage_modules!r}:\n"
            "    importlib.import_module(name)\n"
            "    assert 'great_expectations' not in sys.modules, name + ' imports great_expectations'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]


def test_an_unknown_key_names_the_file_and_the_key(tmp_path):
    text = (ROOT / "params.yaml").read_text().replace("  batch_size: 128", "  batch_size: 128\n  batchsize: 1")
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(DoclifeError, match=r"params.yaml: section 'evaluate': unknown key\(s\) batchsize"):
        load_params(tmp_path / "params.yaml")


def test_a_bad_value_is_refused(tmp_path):
    text = (ROOT / "params.yaml").read_text().replace("primary_metric: macro_f1", "primary_metric: f2")
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(DoclifeError, match="section 'promote'.*unknown metric 'f2'"):
        load_params(tmp_path / "params.yaml")


def test_set_param_keeps_comments_and_other_keys(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    before = path.read_text().splitlines()
    set_param(path, "ingest.source", "corpora/news.jsonl")
    after = path.read_text().splitlines()
    changed = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert len(changed) == 1 and changed[0][1].startswith("  source: corpora/news.jsonl")
    assert load_params(path).ingest.source == "corpora/news.jsonl"


def test_numbers_read_as_dvc_reads_them(tmp_path):
    # `3e-4` is a float in YAML 1.2 (DVC's reading, and what a person means), a string in PyYAML's YAML 1.1.
    path = tmp_path / "params.yaml"
    path.write_text("finetune:\n  learning_rate: 3e-4\n  weight_decay: 1E-2\npretrain:\n  max_steps: 40\n"
                    "schedule:\n  cron: '0 2 * * *'\n", encoding="utf-8")
    params = load_params(path)
    assert params.finetune.learning_rate == 0.0003 and params.finetune.weight_decay == 0.01
    assert params.pretrain.max_steps == 40 and isinstance(params.pretrain.max_steps, int)


def test_long_rows_come_fewer_to_a_batch_and_a_little_growth_keeps_the_batch_size(tmp_path):
    import pandas as pd

    from data_checks.config import EngineConfig

    engine = EngineConfig(batch_rows=100_000, batch_mb=1)
    short, long, grown = tmp_path / "short.parquet", tmp_path / "long.parquet", tmp_path / "grown.parquet"
    pd.DataFrame({"text": ["ok"] * 1000}).to_parquet(short)
    pd.DataFrame({"text": ["x" * 2000 + str(i) for i in range(1000)]}).to_parquet(long)
    pd.DataFrame({"text": ["x" * 2000 + str(i) for i in range(1050)]}).to_parquet(grown)
    assert engine.sized_for(short) == engine  # short rows: batch_rows as configured
    rows = engine.sized_for(long).batch_rows
    assert rows == 512, rows  # about 1 MB of 2 kB rows, rounded down to a power of two
    assert engine.sized_for(grown).batch_rows == rows  # 5% more rows: the same batches, so reuse still hits
    assert engine.sized_for(tmp_path / "missing.parquet") == engine  # the stage reports a missing file itself
    with pytest.raises(DoclifeError, match="batch_mb"):
        EngineConfig(batch_mb=0)
