"""The whole lifecycle on the real review corpus (`make bench-real`): what a team gets from one `doclife run`.

For each task of `online_shopping_10_cats.csv` (the 10 product categories, and sentiment) this clones the
repository (committed state) into a fresh workspace, sets a CPU-budget encoder in its params.yaml, runs
`doclife run --source CORPUS` (the Prefect flow, as a user runs it) and collects what the stages measured:
rows validated and quarantined, pretraining throughput and loss, finetuning, the test metrics, and the
gate's TF-IDF + logistic regression baseline, fitted on the same train split and scored on the same test
documents. Results: bench/results/real_corpus.json and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import CORPUS, save_result
from data_checks.io import read_json
from flows.config import set_param
from flows.layout import Layout

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

CATEGORIES = ["书籍", "平板", "手机", "水果", "洗发水", "热水器", "蒙牛", "衣服", "计算机", "酒店"]
TASKS: dict[str, dict[str, Any]] = {
    "categories": {"ingest.label_column": "cat", "validate.labels": CATEGORIES},
    "sentiment": {"ingest.label_column": "label", "validate.labels": ["0", "1"]},
}
# What fits a 2-core machine in about 15 minutes a task: the quality benchmark's encoder (hidden 128,
# 2 layers, FFN 512, 128-token rows) pretrained for 3,000 steps, then finetuned on every train review.
CPU_BUDGET: dict[str, Any] = {
    "ingest.text_column": "review",
    "tokenize.vocab_size": 8000,
    "pretrain.intermediate_size": 512, "pretrain.max_length": 128, "pretrain.max_steps": 3000,
    "pretrain.warmup_steps": 300, "pretrain.checkpoint_every_n_steps": 500,
    "finetune.max_epochs": 3, "finetune.patience": 2,
}


def run_task(task: str, workdir: Path) -> dict[str, Any]:
    """One fresh workspace, one `doclife run` on the real corpus; what its stages measured."""
    workspace = workdir / task
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(workspace)], check=True)
    at = Layout(workspace)
    for key, value in {**CPU_BUDGET, **TASKS[task]}.items():
        set_param(at.params, key, value)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "PREFECT_HOME": str(workdir / f"prefect-{task}")}  # the flow's ephemeral server, of its own
    start = time.perf_counter()
    done = subprocess.run([str(BIN / "doclife"), "run", "--source", str(CORPUS)], cwd=workspace, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{task}: doclife run failed: {done.stderr.strip().splitlines()[-1:]}")
    summary = json.loads(done.stdout)
    validation = read_json(at.validation_summary)
    pretrain, finetune = read_json(at.metrics("pretrain")), read_json(at.metrics("finetune"))
    verdict = read_json(at.verdict)
    return {
        "labels": TASKS[task]["validate.labels"],
        "wall_seconds": round(wall, 1),
        "stage_seconds": summary["seconds"]["by_stage"],
        "rows": {"in": validation["rows_in"], "validated": validation["validated"],
                 "quarantined": validation["quarantined"], "warnings": validation["warnings"]},
        "pretrain": {key: pretrain[key] for key in ("steps", "val_loss", "tokens_per_second", "packed_rows")},
        "finetune": {key: finetune[key] for key in ("n_train", "epochs", "best_epoch", "best_val_macro_f1")},
        "n_test": verdict["n_test"],
        "model": verdict["challenger"],
        "model_macro_f1_interval": verdict["intervals"]["macro_f1"],
        "baselines": verdict["baselines"],
        "decision": verdict["decision"],
        "reason": verdict["reason"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--keep", type=Path, help="keep the workspaces under this directory (default: removed)")
    args = parser.parse_args()
    if not CORPUS.is_file():
        print(f"SKIP: {CORPUS} not found (set DOCLIFE_BENCH_CORPUS to the online_shopping_10_cats.csv path)")
        return
    tasks = args.tasks.split(",")
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        sys.exit(f"--tasks: unknown {unknown}; choose from {list(TASKS)}")

    with tempfile.TemporaryDirectory(prefix="doclife-bench-real-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = {task: run_task(task, workdir) for task in tasks}
    save_result("real_corpus", {"corpus": CORPUS.name, "settings": CPU_BUDGET, "tasks": results})

    print("| task | rows validated / quarantined | doclife (test macro-F1, 95% interval) | TF-IDF + LR, same split "
          "| majority | gate | `doclife run` |")
    print("|---|---|---|---|---|---|---|")
    for task, r in results.items():
        low, high = r["model_macro_f1_interval"]
        print(f"| {task} | {r['rows']['validated']:,} / {r['rows']['quarantined']:,} | {r['model']['macro_f1']:.3f} "
              f"({low:.3f}-{high:.3f}) | {r['baselines']['tfidf_lr']['macro_f1']:.3f} "
              f"| {r['baselines']['majority']['macro_f1']:.3f} | {r['decision']} | {r['wall_seconds'] / 60:.1f} min |")


if __name__ == "__main__":
    main()
