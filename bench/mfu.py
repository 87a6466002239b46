"""Model FLOPs utilisation of doclife pretraining for the `base` encoder (~110M parameters) in bf16 on one GPU.

Runs the real `pretrain()` (packed rows, sparse MLM head, Lightning, bf16-mixed, layer-wise torch.compile,
fused AdamW) and reports the MFU of its steps after the first: achieved model FLOP/s / the GPU's dense bf16
peak (989 TFLOP/s on an H100/H200), with FLOPs per token from `lightning_modules.model.encoder_flops_per_token`.

Then the same network, batch shape, precision, optimizer and clipping in a bare loop (no Lightning, no data
loading, no per-step host sync): what the model's kernels reach on this device. `pipeline_share_of_bare_loop`
is what the training pipeline keeps of it. `--ablations` times the bare loop again with one choice changed
each (see ABLATIONS); `--profile` writes the bare loop's CUDA kernels by device time.

    python -m bench.mfu [--steps 150] [--batch-size 128] [--max-length 512] [--no-compile]
                        [--ablations all|NAME,...] [--profile]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

from bench.common import CORPUS, RESULTS, save_result, write_snapshot  # noqa: E402
from lightning_modules.config import PretrainConfig, TokenizeConfig  # noqa: E402
from lightning_modules.data import IGNORE_INDEX, mlm_batch  # noqa: E402
from lightning_modules.model import build_mlm, compile_encoder_layers, encoder_flops_per_token, peak_flops  # noqa: E402
from lightning_modules.modules import masked_lm_loss_sum  # noqa: E402
from lightning_modules.tokenizer import train_tokenizer  # noqa: E402
from lightning_modules.train import _load_tokenizer, pretrain  # noqa: E402


# Each changes one choice of the bare loop, which otherwise trains as `pretrain()` does on a GPU (layer-wise
# compilation, fused AdamW, default kernels): together they say what each choice costs or would gain.
ABLATIONS = {
    "unfused_adamw": {"fused": False},
    "deterministic_kernels": {"deterministic": True},
    "whole_encoder_compiled": {"compile": "encoder"},
    "no_compile": {"compile": False},
    "dropout_0.1": {"dropout": 0.1},  # pretraining's default is none
    "batch_x2": {"batch_size_factor": 2},
    "coordinate_descent_tuning": {"tuned": True},
    # Inductor's own matmul kernels where they beat cuBLAS, with GELU and bias fused into them (minutes to compile).
    "max_autotune": {"compile": "max-autotune-no-cudagraphs"},
    "flash_attention_backend": {"attention": SDPBackend.FLASH_ATTENTION},  # instead of SDPA's pick (cuDNN on Hopper)
}


def bare_loop(
    cfg: PretrainConfig,
    vocab_size: int,
    steps: int = 30,
    warmup: int = 5,
    fused: bool = True,
    deterministic: bool = False,
    dropout: float | None = None,
    compile: bool | str | None = None,
    batch_size_factor: int = 1,
    tuned: bool = False,
    attention: SDPBackend | None = None,
    profile_path: Path | None = None,
) -> dict:
    """Tokens/s and MFU of forward + backward + clipping + AdamW on one fixed batch, timed by one sync at the end."""
    torch._dynamo.reset()  # a fresh compilation for each variant, with static shapes
    torch._inductor.config.coordinate_descent_tuning = tuned  # searches each Triton kernel's launch settings
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.manual_seed(0)
    compile = cfg.compile if compile is None else compile
    cfg = replace(cfg, dropout=cfg.dropout if dropout is None else dropout, batch_size=cfg.batch_size * batch_size_factor)
    model = build_mlm(cfg, vocab_size=vocab_size, pad_token_id=0).cuda().train()
    if compile == "encoder":  # the whole encoder as one graph
        model.bert.compile()
    elif compile:
        compile_encoder_layers(model, mode=compile if isinstance(compile, str) else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=fused)
    ids = torch.randint(5, vocab_size, (cfg.batch_size, cfg.max_length))  # (batch, seq)
    targets = torch.rand(ids.shape) < cfg.mask_probability
    batch = mlm_batch(ids, torch.where(targets, ids, torch.full_like(ids, IGNORE_INDEX)))
    batch = {key: value.cuda() for key, value in batch.items()}

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel(attention) if attention else nullcontext():
            loss_sum = masked_lm_loss_sum(model, batch["input_ids"], batch["labels"], batch["target_positions"])
            loss = loss_sum / batch["global_targets"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    breaks_before = sum(torch._dynamo.utils.counters["graph_break"].values())
    for _ in range(warmup):  # compilation and the allocator's first sizes
        step()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    if profile_path is not None:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                step()
            torch.cuda.synchronize()
        profile_path.write_text(
            "CUDA kernels of 5 bare-loop steps, by total device time\n"
            + prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=90),
            encoding="utf-8",
        )
    torch.use_deterministic_algorithms(False)
    torch._inductor.config.coordinate_descent_tuning = False
    tokens_per_second = steps * ids.numel() / seconds
    flops = encoder_flops_per_token(model.config, cfg.max_length, cfg.mask_probability)
    return {"tokens_per_second": round(tokens_per_second, 1), "step_ms": round(1000 * seconds / steps, 2),
            "mfu": round(tokens_per_second * flops / peak_flops(torch.cuda.get_device_name(), cfg.precision), 4),
            "graph_breaks": sum(torch._dynamo.utils.counters["graph_break"].values()) - breaks_before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--ablations", default="", help="comma-separated, or 'all': also time the bare loop with one "
                        "choice changed: " + ", ".join(ABLATIONS))
    parser.add_argument("--profile", action="store_true", help="write the bare loop's CUDA kernels by time to "
                        "bench/results/mfu_profile.txt")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("SKIP: no CUDA device; run this where a GPU is present")
        sys.exit(0)

    cfg = PretrainConfig(
        size="base", max_length=args.max_length, batch_size=args.batch_size, max_steps=args.steps, warmup_steps=5,
        learning_rate=1e-4, checkpoint_every_n_steps=args.steps, accelerator="gpu", devices=1,
        precision="bf16-mixed", compile=not args.no_compile,
    )
    with tempfile.TemporaryDirectory(prefix="doclife-mfu-") as tmp:
        root = Path(tmp)
        if CORPUS.is_file():
            from bench.common import require_corpus, sentiment_split

            rows = sentiment_split(require_corpus())
            snapshot, data = write_snapshot(rows[rows["split"] != "test"], root / "snapshot"), CORPUS.name
        else:
            from lightning_modules.synthetic import make_snapshot

            snapshot, data = make_snapshot(root / "snapshot", n_docs=40000, seed=0), "generated sample (40000 docs)"
        # BERT-base's vocabulary size: the MLM head is then the size it has in BERT-base.
        train_tokenizer(TokenizeConfig(vocab_size=30522, min_frequency=1), snapshot, root / "tokenizer")
        metrics = pretrain(cfg, snapshot, root / "tokenizer", root / "model", root / "ckpt", root / "m.json", root / "c.csv")
        vocab_size = len(_load_tokenizer(root / "tokenizer"))
    RESULTS.mkdir(exist_ok=True)
    bare = bare_loop(cfg, vocab_size, profile_path=RESULTS / "mfu_profile.txt" if args.profile else None)
    print("bare loop", bare, flush=True)
    ablations = {}
    for name in ABLATIONS if args.ablations == "all" else filter(None, args.ablations.split(",")):
        ablations[name] = bare_loop(cfg, vocab_size, **ABLATIONS[name])
        print("bare loop,", name, ablations[name], flush=True)
    save_result("mfu", {
        "device": torch.cuda.get_device_name(), "data": data, "size": cfg.size, "parameters": metrics["parameters"],
        "precision": cfg.precision, "compile": cfg.compile, "max_length": cfg.max_length, "batch_size": cfg.batch_size,
        "steps": metrics["steps"], "mfu": metrics["mfu"], "tokens_per_second": metrics["tokens_per_second"],
        "bare_loop": bare, "pipeline_share_of_bare_loop": round(metrics["tokens_per_second"] / bare["tokens_per_second"], 3),
        "bare_loop_ablations": ablations,
        "torch": torch.__version__,
    })


if __name__ == "__main__":
    main()
