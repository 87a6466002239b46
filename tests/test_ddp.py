"""Two-process DDP pretraining on the CPU (gloo), launched the way the CLI is: as a script Lightning re-runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lightning_modules.config import TokenizeConfig
from lightning_modules.synthetic import make_snapshot
from lightning_modules.tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_pretrain_with_two_ddp_processes(tmp_path: Path) -> None:
    snapshot = make_snapshot(tmp_path / "snapshot", n_docs=200, seed=4)
    train_tokenizer(TokenizeConfig(vocab_size=400), snapshot, tmp_path / "tokenizer")
    # Lightning's ddp launcher starts rank 1 by running sys.argv again, so the call must live in a script.
    script = tmp_path / "run_ddp.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path
            from lightning_modules.config import PretrainConfig
            from lightning_modules.train import pretrain

            root = Path({str(tmp_path)!r})
            cfg = PretrainConfig(
                hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_length=32, batch_size=16,
                max_steps=6, warmup_steps=2, checkpoint_every_n_steps=3,
                accelerator="cpu", devices=2, strategy="ddp",
            )
            metrics = pretrain(cfg, root / "snapshot", root / "tokenizer", root / "model", root / "ckpt",
                               root / "metrics.json", root / "curve.csv")
            print("DOCLIFE_WORLD_SIZE", metrics["world_size"], flush=True)
            """
        )
    )
    env = os.environ | {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "Starting with 2 processes" in log or "MEMBER: 2/2" in log
    assert log.count("DOCLIFE_WORLD_SIZE 2") == 2  # both ranks finished
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 6
    assert (tmp_path / "model" / "config.json").is_file() and (tmp_path / "model" / "tokenizer.json").is_file()
    assert (tmp_path / "curve.csv").read_text().startswith("step,train_loss,val_loss")
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()
