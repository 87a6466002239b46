"""kill -9 in the middle of pretraining, then the same command again: it resumes and ends where an
uninterrupted run ends, with the same weights."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lightning_modules.config import TokenizeConfig
from lightning_modules.synthetic import make_snapshot
from lightning_modules.tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parents[1]
MAX_STEPS = 30
EVERY = 5


def _script(root: Path) -> Path:
    """The pretraining command under test: `python run.py OUT_DIR` (the same command is run again to resume)."""
    script = root / "run.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            from pathlib import Path
            from lightning_modules.config import PretrainConfig
            from lightning_modules.train import pretrain

            root, out = Path({str(root)!r}), Path(sys.argv[1])
            cfg = PretrainConfig(
                hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_length=32, batch_size=8,
                accumulate_grad_batches=2, dropout=0.1, max_steps={MAX_STEPS}, warmup_steps=5,
                checkpoint_every_n_steps={EVERY}, accelerator="cpu",
            )
            pretrain(cfg, root / "snapshot", root / "tokenizer", out / "model", out / "ckpt", out / "metrics.json",
                     out / "curve.csv")
            """
        )
    )
    return script


def _env() -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _checkpointed_steps(ckpt_dir: Path) -> list[int]:
    return [int(m.group(1)) for p in ckpt_dir.glob("*.ckpt") if (m := re.search(r"step=(\d+)", p.name))]


@pytest.mark.slow
def test_kill_9_then_rerun_resumes_and_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    snapshot = make_snapshot(tmp_path / "snapshot", n_docs=300, seed=5)
    train_tokenizer(TokenizeConfig(vocab_size=400), snapshot, tmp_path / "tokenizer")
    script = _script(tmp_path)
    command = [sys.executable, str(script)]

    # Dropout is on and two micro-batches make a step: the resumed run must also restore the RNG's position.
    straight = subprocess.run([*command, str(tmp_path / "straight")], cwd=REPO, env=_env(), capture_output=True,
                              text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-3000:]

    victim = tmp_path / "killed"
    proc = subprocess.Popen([*command, str(victim)], cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if any(step >= 2 * EVERY for step in _checkpointed_steps(victim / "ckpt")):
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (victim / "metrics.json").exists()

    again = subprocess.run([*command, str(victim)], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    log = again.stdout + again.stderr
    assert again.returncode == 0, log[-3000:]
    resumed = re.search(r"resuming from step (\d+)", log)
    assert resumed, log[-3000:]
    step = int(resumed.group(1))
    assert step >= EVERY and step % EVERY == 0 and step < MAX_STEPS

    metrics = json.loads((victim / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == step and metrics["steps"] == MAX_STEPS
    assert metrics["steps_this_run"] == MAX_STEPS - step
    reference = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    weights = load_file(victim / "model" / "model.safetensors")
    assert reference.keys() == weights.keys()
    for name, tensor in reference.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    # The loss curve is whole: one row per step across both processes, equal to the uninterrupted one.
    straight_curve = (tmp_path / "straight" / "curve.csv").read_text().splitlines()
    curve = (victim / "curve.csv").read_text().splitlines()
    assert [r.split(",")[:3] for r in curve] == [r.split(",")[:3] for r in straight_curve]
