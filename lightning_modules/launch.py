"""Launch commands for training on one machine or many: the `doclife` stage under torchrun or SLURM's srun.

On one machine `doclife pretrain` is enough: Lightning's ddp starts one process per device itself. Across
machines, a launcher starts the processes and Lightning joins them (it recognises torchrun's and SLURM's
environment variables); the process counts must equal `devices` x `num_nodes` from params.yaml.

    python -m lightning_modules.launch pretrain --launcher torchrun   # prints the command for each node
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import yaml

from data_checks.io import DoclifeError
from lightning_modules.config import FinetuneConfig, PretrainConfig

LAUNCHERS = ("local", "torchrun", "srun")


def launch_command(
    cfg: PretrainConfig | FinetuneConfig,
    stage: str,
    launcher: str,
    master_addr: str = "$MASTER_ADDR",
    master_port: int = 29500,
    node_rank: str = "$NODE_RANK",
) -> list[str]:
    """The argv that runs `doclife STAGE` with `cfg.devices` processes on each of `cfg.num_nodes` machines.

    torchrun: run the same command on every node, each with its own NODE_RANK (0 .. num_nodes-1) and the
    address of node 0. srun: run once inside an allocation (sbatch/salloc); SLURM starts every task.
    """
    if stage not in ("pretrain", "finetune"):
        raise DoclifeError(f"launch: stage must be pretrain or finetune, got {stage!r}")
    if launcher not in LAUNCHERS:
        raise DoclifeError(f"launch: launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    stage_cmd = ["doclife", stage]
    if launcher == "local":
        if cfg.num_nodes > 1:
            raise DoclifeError(f"launch: {stage}.num_nodes={cfg.num_nodes} needs torchrun or srun, not a local run")
        return stage_cmd
    if not isinstance(cfg.devices, int) or cfg.devices < 1:
        raise DoclifeError(f"launch: {launcher} needs {stage}.devices as a process count per node, got {cfg.devices!r}")
    if launcher == "torchrun":
        if cfg.num_nodes == 1:
            rendezvous = ["--standalone"]
        else:
            rendezvous = [f"--node-rank={node_rank}", f"--master-addr={master_addr}", f"--master-port={master_port}"]
        # --no-python: the console script is the program, not a Python file.
        return ["torchrun", f"--nnodes={cfg.num_nodes}", f"--nproc-per-node={cfg.devices}", *rendezvous, "--no-python", *stage_cmd]
    # SLURM: one task per device; Lightning checks that ntasks-per-node equals `devices`.
    gpus = [] if cfg.accelerator == "cpu" else [f"--gpus-per-node={cfg.devices}"]
    return ["srun", f"--nodes={cfg.num_nodes}", f"--ntasks-per-node={cfg.devices}", *gpus, *stage_cmd]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the command that launches a training stage on many devices.")
    parser.add_argument("stage", choices=["pretrain", "finetune"])
    parser.add_argument("--launcher", choices=LAUNCHERS, default="torchrun")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--master-addr", default="$MASTER_ADDR")
    parser.add_argument("--master-port", type=int, default=29500)
    args = parser.parse_args(argv)
    raw = yaml.safe_load(Path(args.params).read_text(encoding="utf-8")) or {}
    cls = PretrainConfig if args.stage == "pretrain" else FinetuneConfig
    cfg = cls(**(raw.get(args.stage) or {}))
    argv_out = launch_command(cfg, args.stage, args.launcher, args.master_addr, args.master_port)
    # $NODE_RANK and $MASTER_ADDR stay unquoted: each node's shell fills them in.
    print(" ".join(a if "$" in a else shlex.quote(a) for a in argv_out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
