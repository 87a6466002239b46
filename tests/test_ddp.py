"""Two-process DDP pretraining and finetuning on the CPU (gloo), launched the way the CLI is: as a script
Lightning re-runs.

With the same global batch (2 x 8 rows vs 1 x 16), two processes follow the one-process run step for step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from conftest import save_checkpoint
from flows.registry import model_digest
from lightning_modules.checkpoint import BaseCheckpoint
from lightning_modules.config import TokenizeConfig
from lightning_modules.synthetic import make_snapshot
from lightning_modules.tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parents[1]


def _write_run_script(tmp_path: Path, init_from: Path | None = None) -> Path:
    """A script that pretrains on the snapshot in tmp_path: `run.py DEVICES STRATEGY ACCELERATOR`; with
    `init_from`, it continues from that checkpoint with its tokenizer (pretrain.init_from).

    Lightning's ddp launcher starts rank 1 by running sys.argv again, so the call must live in a script.
    """
    # Small enough that 8 steps of 16 rows go past one epoch (the disjoint-rows check spans two).
    snapshot = make_snapshot(tmp_path / "snapshot", n_docs=120, seed=4)
    base = None if init_from is None else BaseCheckpoint(init_from, str(init_from), model_digest(init_from))
    train_tokenizer(TokenizeConfig(vocab_size=400), snapshot, tmp_path / "tokenizer", base=base)
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json
            import sys
            from pathlib import Path
            from lightning_modules import data
            from flows.registry import model_digest
            from lightning_modules.checkpoint import BaseCheckpoint
            from lightning_modules.config import PretrainConfig
            from lightning_modules.train import pretrain

            root, devices, strategy, accelerator = Path({str(tmp_path)!r}), int(sys.argv[1]), sys.argv[2], sys.argv[3]
            init_from = {None if init_from is None else str(init_from)!r}
            base = None if init_from is None else BaseCheckpoint(Path(init_from), init_from, model_digest(Path(init_from)))
            out = root / f"run{{devices}}-{{strategy}}"

            # Record the packed rows each rank reads (micro-batch, row numbers), one file per rank.
            read_rows = data.PackedMLMBatches.row_numbers
            def recorded(self, m):
                rows = read_rows(self, m)
                out.mkdir(parents=True, exist_ok=True)
                with (out / f"rows-rank{{self.rank}}.jsonl").open("a") as handle:
                    handle.write(json.dumps([int(m), rows.tolist(), len(self.rows), self.batches_per_epoch]) + "\\n")
                return rows
            data.PackedMLMBatches.row_numbers = recorded
            cfg = PretrainConfig(
                # With a checkpoint these size fields (64 wide) are ignored: its shape (32 wide) wins.
                hidden_size=32 if base is None else 64, num_layers=2, num_heads=2, intermediate_size=64, max_length=32,
                batch_size=16 // devices, max_steps=8, warmup_steps=2, checkpoint_every_n_steps=4,
                accelerator=accelerator, devices=devices, strategy=strategy,
                init_from=init_from,
            )
            metrics = pretrain(cfg, root / "snapshot", root / "tokenizer", out / "model", out / "ckpt",
                               out / "metrics.json", out / "curve.csv", base=base)
            print("DOCLIFE_WORLD_SIZE", metrics["world_size"], flush=True)
            """
        )
    )
    return script


def _run(script: Path, devices: int, strategy: str, accelerator: str) -> str:
    env = os.environ | {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(script), str(devices), strategy, accelerator],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    return log


def _assert_same_run(one: Path, two: Path, tolerance: float) -> None:
    """Same rows, same masks, loss normalised by the global target count: the curves agree step by step up to
    float summation order (all-reduce vs one matmul), and so do the exported weights."""
    curves = {n: pd.read_csv(d / "curve.csv") for n, d in ((1, one), (2, two))}
    assert curves[1]["step"].tolist() == curves[2]["step"].tolist() == list(range(1, 9))
    assert (curves[1]["train_loss"] - curves[2]["train_loss"]).abs().max() < tolerance
    assert (curves[1]["val_loss"] - curves[2]["val_loss"]).abs().max() < tolerance
    w1, w2 = load_file(one / "model" / "model.safetensors"), load_file(two / "model" / "model.safetensors")
    assert w1.keys() == w2.keys()
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=tolerance, atol=tolerance / 10, msg=name)


def _assert_disjoint_rows_covering_the_epochs(run: Path) -> None:
    """Each rank read only its own rows: disjoint within every micro-batch and epoch, and together every row
    an epoch takes (its whole global micro-batches), each once."""
    reads = {rank: [json.loads(line) for line in (run / f"rows-rank{rank}.jsonl").read_text().splitlines()]
             for rank in (0, 1)}
    n_rows, per_epoch = reads[0][0][2], reads[0][0][3]
    assert per_epoch < 8, "the run must go past one epoch for this check"
    by_epoch: dict[int, list[list[int]]] = {}
    for rank, records in reads.items():
        # One read per micro-batch, in order; Lightning's loop fetches one batch ahead of the last step.
        assert [m for m, *_ in records][:8] == list(range(8)) and len(records) <= 9
        for m, rows, *_ in records[:8]:
            assert len(rows) == 8  # batch_size: half the global micro-batch, nothing more
            by_epoch.setdefault(m // per_epoch, []).append(rows)
    first = [row for rows in by_epoch[0] for row in rows]
    assert len(first) == len(set(first)) == per_epoch * 16 and set(first) <= set(range(n_rows))
    second = [row for rows in by_epoch[1] for row in rows]
    assert len(second) == len(set(second)) and second != first[: len(second)]  # a fresh order each epoch


def _write_finetune_script(tmp_path: Path) -> Path:
    """`finetune.py DEVICES`: finetunes the one-process run's pretrained model on the snapshot in tmp_path."""
    script = tmp_path / "finetune.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            from pathlib import Path
            from lightning_modules.config import FinetuneConfig
            from lightning_modules.synthetic import LABELS
            from lightning_modules.train import finetune

            root, devices = Path({str(tmp_path)!r}), int(sys.argv[1])
            out = root / f"finetune{{devices}}"
            cfg = FinetuneConfig(batch_size=8, max_epochs=1, warmup_steps=2, accelerator="cpu", devices=devices,
                                 strategy="ddp" if devices > 1 else "auto")
            metrics = finetune(cfg, root / "snapshot", root / "run1-auto" / "model", LABELS, out / "model",
                               out / "ckpt", out / "metrics.json", out / "curve.csv")
            print("DOCLIFE_FINETUNED", metrics["world_size"], metrics["steps"], metrics["n_train"], flush=True)
            """
        )
    )
    return script


@pytest.mark.slow
def test_pretrain_with_two_ddp_processes(tmp_path: Path) -> None:
    script = _write_run_script(tmp_path)
    log = _run(script, 2, "ddp", "cpu")
    _run(script, 1, "auto", "cpu")
    assert "Starting with 2 processes" in log or "MEMBER: 2/2" in log
    assert log.count("DOCLIFE_WORLD_SIZE 2") == 2  # both ranks finished
    two, one = tmp_path / "run2-ddp", tmp_path / "run1-auto"
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 8 and metrics["global_batch_rows"] == 16
    assert (two / "model" / "config.json").is_file() and (two / "model" / "tokenizer.json").is_file()
    assert (two / "ckpt" / "last.ckpt").is_file()

    _assert_same_run(one, two, tolerance=1e-4)
    _assert_disjoint_rows_covering_the_epochs(two)

    # Finetuning deals its length-grouped batches out to the two processes: each takes half an epoch's steps.
    finetuning = _write_finetune_script(tmp_path)
    alone, together = (_run(finetuning, devices, "", "").split("DOCLIFE_FINETUNED ")[-1].split()[:3] for devices in (1, 2))
    (world_one, steps_one, n_train), (world_two, steps_two, _) = alone, together
    batches = -(-int(n_train) // 8)
    assert (world_one, world_two) == ("1", "2")
    assert int(steps_one) == batches and int(steps_two) == -(-batches // 2), (steps_one, steps_two, n_train)
    assert (tmp_path / "finetune2" / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_continued_pretraining_with_two_ddp_processes_starts_every_rank_from_the_checkpoint(tmp_path: Path) -> None:
    texts = pd.read_parquet(make_snapshot(tmp_path / "other", n_docs=120, seed=9) / "corpus.parquet")["text"].tolist()
    checkpoint = save_checkpoint(tmp_path / "team-bert", texts)
    script = _write_run_script(tmp_path, init_from=checkpoint)
    log = _run(script, 2, "ddp", "cpu")
    _run(script, 1, "auto", "cpu")
    assert log.count("DOCLIFE_WORLD_SIZE 2") == 2
    two, one = tmp_path / "run2-ddp", tmp_path / "run1-auto"
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["base_checkpoint"]["sha256"] == model_digest(checkpoint)
    # The checkpoint's shape (32 wide, 2 layers, its vocabulary), not the script's size fields, on both ranks.
    start, trained = load_file(checkpoint / "model.safetensors"), load_file(two / "model" / "model.safetensors")
    assert {k: v.shape for k, v in trained.items()} == {k: v.shape for k, v in start.items()}
    _assert_same_run(one, two, tolerance=1e-4)


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="Lightning's fsdp strategy runs on CUDA devices only")
def test_pretrain_with_fsdp_matches_ddp(tmp_path: Path) -> None:
    # fsdp shards parameters, gradients and optimizer state over every GPU here; the export gathers them.
    script = _write_run_script(tmp_path)
    devices = min(2, torch.cuda.device_count())
    _run(script, devices, "fsdp", "gpu")
    _run(script, devices, "ddp", "gpu")
    _assert_same_run(tmp_path / f"run{devices}-ddp", tmp_path / f"run{devices}-fsdp", tolerance=1e-3)
