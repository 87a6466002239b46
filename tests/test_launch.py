"""Launch-command construction for torchrun and SLURM from the training config."""

from __future__ import annotations

import pytest

from data_checks.io import DoclifeError
from lightning_modules.config import FinetuneConfig, PretrainConfig
from lightning_modules.launch import launch_command, main


def test_single_machine_runs_the_stage_itself() -> None:
    assert launch_command(PretrainConfig(devices=4, strategy="ddp"), "pretrain", "local") == ["doclife", "pretrain"]
    assert launch_command(PretrainConfig(devices=2), "pretrain", "torchrun") == [
        "torchrun", "--nnodes=1", "--nproc-per-node=2", "--standalone", "--no-python", "doclife", "pretrain",
    ]


def test_torchrun_across_nodes_uses_node_rank_and_master() -> None:
    cfg = PretrainConfig(accelerator="gpu", devices=8, num_nodes=4, strategy="fsdp", precision="bf16-mixed")
    assert launch_command(cfg, "pretrain", "torchrun", master_addr="10.0.0.1", master_port=29400) == [
        "torchrun", "--nnodes=4", "--nproc-per-node=8", "--node-rank=$NODE_RANK", "--master-addr=10.0.0.1",
        "--master-port=29400", "--no-python", "doclife", "pretrain",
    ]


def test_srun_one_task_per_device() -> None:
    cfg = FinetuneConfig(accelerator="gpu", devices=4, num_nodes=2, strategy="ddp")
    assert launch_command(cfg, "finetune", "srun") == [
        "srun", "--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "doclife", "finetune",
    ]
    cpu = PretrainConfig(accelerator="cpu", devices=2, num_nodes=3)
    assert launch_command(cpu, "pretrain", "srun") == ["srun", "--nodes=3", "--ntasks-per-node=2", "doclife", "pretrain"]


def test_refuses_what_cannot_launch() -> None:
    with pytest.raises(DoclifeError, match="torchrun or srun"):
        launch_command(PretrainConfig(num_nodes=2), "pretrain", "local")
    with pytest.raises(DoclifeError, match="process count"):
        launch_command(PretrainConfig(devices="auto"), "pretrain", "srun")  # type: ignore[arg-type]
    with pytest.raises(DoclifeError, match="stage"):
        launch_command(PretrainConfig(), "evaluate", "srun")


def test_cli_prints_a_shell_command_from_params(tmp_path, capsys) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("pretrain:\n  accelerator: gpu\n  devices: 8\n  num_nodes: 2\n")
    assert main(["pretrain", "--launcher", "torchrun", "--params", str(params)]) == 0
    out = capsys.readouterr().out.strip()
    assert out == ("torchrun --nnodes=2 --nproc-per-node=8 --node-rank=$NODE_RANK --master-addr=$MASTER_ADDR "
                   "--master-port=29500 --no-python doclife pretrain")
