"""The real-corpus benchmark's settings are ones params.yaml accepts (the run itself takes 40 min: `make bench-real`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.real_corpus import CPU_BUDGET, TASKS
from flows.config import load_params, set_param

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("task", sorted(TASKS))
def test_each_task_sets_keys_params_yaml_has_and_accepts(task, tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    for key, value in {**CPU_BUDGET, **TASKS[task]}.items():
        set_param(params, key, value)
    loaded = load_params(params)
    assert loaded.ingest.text_column == "review" and loaded.pretrain.max_steps == 3000
    assert loaded.ingest.label_column == TASKS[task]["ingest.label_column"]
    assert loaded.validate.labels == TASKS[task]["validate.labels"]
