"""Model FLOPs utilisation of doclife pretraining for the `base` encoder (~110M parameters) in bf16 on one GPU.

Runs the real `pretrain()` (packed rows, sparse MLM head, Lightning, bf16-mixed, layer-wise torch.compile,
fused AdamW) and reports the MFU of its steps after the first: achieved model FLOP/s / the GPU's dense bf16
peak (989 TFLOP/s on an H100/H200), with FLOPs per token from `lightning_modules.model.encoder_flops_per_token`.

Then the same network, batch shape, precision, optimizer and clipping in a bare loop (no Lightning, no data
loading, no per-step host sync): what the model's kernels reach on this device. `pipeline_share_of_bare_loop`
is what the training pipeline keeps of it. `--ablations` times the bare loop again with one choice changed
each (see ABLATIONS; `a+b` changes two at once); `--profile` writes the bare loop's CUDA kernels by device time.
`--no-pipeline` skips the pipeline run and writes `mfu_bare.json`: a quick look at candidate changes.

    python -m bench.mfu [--steps 150] [--batch-size 128] [--max-length 512] [--no-compile]
                        [--ablations all|NAME[+NAME],...] [--profile] [--no-pipeline]
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
import torch.nn.functional as F  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from transformers.models.bert.modeling_bert import (  # noqa: E402
    ALL_ATTENTION_FUNCTIONS,
    BertSelfAttention,
    eager_attention_forward,
)

from bench.common import CORPUS, RESULTS, save_result, write_snapshot  # noqa: E402
from bench.residual_precision import Float32LayerNorm  # noqa: E402
from lightning_modules.config import PretrainConfig, TokenizeConfig  # noqa: E402
from lightning_modules.data import IGNORE_INDEX, mlm_batch  # noqa: E402
from lightning_modules.model import (  # noqa: E402
    INDUCTOR_OPTIONS,
    build_mlm,
    compile_encoder_layers,
    encoder_flops_per_token,
    peak_flops,
    swap_layer_norms,
)
from lightning_modules.modules import masked_lm_loss_sum  # noqa: E402
from lightning_modules.tokenizer import train_tokenizer  # noqa: E402
from lightning_modules.train import _load_tokenizer, pretrain  # noqa: E402


# Each changes one choice of the bare loop, which otherwise trains as `pretrain()` does on a GPU (layer-wise
# compilation with coordinate-descent tuning, fused AdamW, default kernels, the bf16 residual stream): together
# they say what each choice costs or would gain.
ABLATIONS = {
    "unfused_adamw": {"fused": False},
    "deterministic_kernels": {"deterministic": True},
    "whole_encoder_compiled": {"compile": "encoder"},
    "no_compile": {"compile": False},
    "dropout_0.1": {"dropout": 0.1},  # pretraining's default is none
    "batch_x2": {"batch_size_factor": 2},
    "no_coordinate_descent_tuning": {"inductor": {"coordinate_descent_tuning": False}},
    # Inductor's own matmul kernels where they beat cuBLAS, with GELU and bias fused into them (minutes to compile).
    "max_autotune": {"inductor": {"max_autotune": True}},
    "flash_attention_backend": {"attention": SDPBackend.FLASH_ATTENTION},  # instead of SDPA's pick (cuDNN on Hopper)
    # Each layer replayed as CUDA graphs (Inductor's cudagraph trees): fewer gaps between a step's ~1,000 kernels.
    "cuda_graphs": {"inductor": {"triton.cudagraphs": True}},
    # The embeddings and all 12 layers as two graphs, the mask still decided outside them (so attention keeps its
    # fused kernel): Inductor can then fuse across layer boundaries, such as the casts of the residual stream.
    "encoder_stack_compiled": {"compile": "stack"},
    "fused_qkv": {"fused_qkv": True},  # one matmul of 3 x hidden outputs for Q, K and V instead of three
    # LayerNorm handing on float32, as CUDA autocast has it: a float32 residual stream (see AutocastLayerNorm).
    "float32_residual_stream": {"float32_residual": True},
}


def ablation_options(name: str) -> dict:
    """The bare loop's keyword arguments for an ablation, or for several joined by `+` (applied left to right;
    Inductor settings accumulate)."""
    options: dict = {}
    for part in name.split("+"):
        if part not in ABLATIONS:
            raise KeyError(f"unknown ablation {part!r}; known: {', '.join(ABLATIONS)}")
        for key, value in ABLATIONS[part].items():
            options[key] = options.get(key, {}) | value if isinstance(value, dict) else value
    return options


class FusedQKVSelfAttention(BertSelfAttention):
    """BERT self-attention computing Q, K and V with one matmul.

    The three weight matrices are concatenated at each call (a 3.5 MB copy in `base`, against the 100 MB
    activations each projection reads), so the parameters, their names and every checkpoint stay those of
    transformers' module. Swapped in with `use_fused_qkv`.
    """

    def forward(self, hidden_states, attention_mask=None, cache=None, **kwargs):
        if cache is not None:  # decoding with a cache: not an encoder's path
            return super().forward(hidden_states, attention_mask, cache=cache, **kwargs)
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        input_shape = hidden_states.shape[:-1]  # (batch, seq)
        qkv = F.linear(hidden_states, weight, bias).view(*input_shape, 3, -1, self.attention_head_size)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, seq, head size)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        output, weights = attention(self, query, key, value, attention_mask, scaling=self.scaling,
                                    dropout=self.dropout.p if self.training else 0.0, **kwargs)
        return output.reshape(*input_shape, -1).contiguous(), weights


def use_fused_qkv(model: torch.nn.Module) -> None:
    """Swap every BERT self-attention of `model` for `FusedQKVSelfAttention`, in place (same parameters)."""
    for module in model.modules():
        if type(module) is BertSelfAttention:
            module.__class__ = FusedQKVSelfAttention


def bare_loop(
    cfg: PretrainConfig,
    vocab_size: int,
    steps: int = 30,
    warmup: int = 5,
    fused: bool = True,
    deterministic: bool = False,
    dropout: float | None = None,
    compile: bool | str | None = None,
    fused_qkv: bool = False,
    float32_residual: bool = False,
    batch_size_factor: int = 1,
    inductor: dict | None = None,
    attention: SDPBackend | None = None,
    profile_path: Path | None = None,
) -> dict:
    """Tokens/s and MFU of forward + backward + clipping + AdamW on one fixed batch, timed by one sync at the end.

    `compile`: None (as `cfg`), False, True (each layer on its own), "encoder" (the whole BertModel, mask
    creation included) or "stack" (the embeddings, and the 12 layers as one graph); `inductor`: settings over
    the product's INDUCTOR_OPTIONS. On a machine without CUDA it runs on the CPU (for tests; no MFU there).
    """
    device = "cuda" if torch.cuda.is_available() else "cpu"
    synchronize = torch.cuda.synchronize if device == "cuda" else lambda: None
    if device == "cuda":  # each variant's own peak memory: the headroom for a larger batch
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    torch._dynamo.reset()  # a fresh compilation for each variant, with static shapes
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.manual_seed(0)
    compile = cfg.compile if compile is None else compile
    cfg = replace(cfg, dropout=cfg.dropout if dropout is None else dropout, batch_size=cfg.batch_size * batch_size_factor)
    model = build_mlm(cfg, vocab_size=vocab_size, pad_token_id=0).to(device).train()
    if fused_qkv:
        use_fused_qkv(model)
    if float32_residual:
        swap_layer_norms(model.bert, Float32LayerNorm)  # as CUDA autocast runs nn.LayerNorm, on any device
    options = INDUCTOR_OPTIONS | (inductor or {})
    if compile == "encoder":  # the whole BertModel as one graph
        model.bert.compile(options=options)
    elif compile == "stack":
        model.bert.embeddings.compile(options=options)
        model.bert.encoder.compile(options=options)
    elif compile:
        compile_encoder_layers(model, inductor)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=fused)
    ids = torch.randint(5, vocab_size, (cfg.batch_size, cfg.max_length))  # (batch, seq)
    targets = torch.rand(ids.shape) < cfg.mask_probability
    batch = mlm_batch(ids, torch.where(targets, ids, torch.full_like(ids, IGNORE_INDEX)))
    batch = {key: value.to(device) for key, value in batch.items()}

    def step() -> None:
        torch.compiler.cudagraph_mark_step_begin()  # the cuda_graphs variant's replays may reuse the last step's memory
        with torch.autocast(device, dtype=torch.bfloat16), sdpa_kernel(attention) if attention else nullcontext():
            loss_sum = masked_lm_loss_sum(model, batch["input_ids"], batch["labels"], batch["target_positions"])
            loss = loss_sum / batch["n_targets"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    breaks_before = sum(torch._dynamo.utils.counters["graph_break"].values())
    for _ in range(warmup):  # compilation and the allocator's first sizes
        step()
    synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
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
    tokens_per_second = steps * ids.numel() / seconds
    flops = encoder_flops_per_token(model.config, cfg.max_length, cfg.mask_probability)
    peak = peak_flops(torch.cuda.get_device_name(), cfg.precision) if device == "cuda" else None
    return {"tokens_per_second": round(tokens_per_second, 1), "step_ms": round(1000 * seconds / steps, 2),
            "mfu": round(tokens_per_second * flops / peak, 4) if peak else None,
            "graph_breaks": sum(torch._dynamo.utils.counters["graph_break"].values()) - breaks_before,
            "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 1) if device == "cuda" else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--ablations", default="", help="comma-separated, or 'all': also time the bare loop with one "
                        "choice changed (`a+b`: two at once): " + ", ".join(ABLATIONS))
    parser.add_argument("--profile", action="store_true", help="write the bare loop's CUDA kernels by time to "
                        "bench/results/mfu_profile.txt")
    parser.add_argument("--no-pipeline", action="store_true", help="bare loop and ablations only, into mfu_bare.json")
    args = parser.parse_args()
    names = list(ABLATIONS) if args.ablations == "all" else [name for name in args.ablations.split(",") if name]
    for name in names:  # a misspelt name fails now, not after the minutes of the runs before it
        try:
            ablation_options(name)
        except KeyError as error:
            parser.error(error.args[0])
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
        vocab_size = len(_load_tokenizer(root / "tokenizer"))
        metrics = None if args.no_pipeline else pretrain(
            cfg, snapshot, root / "tokenizer", root / "model", root / "ckpt", root / "m.json", root / "c.csv")
    RESULTS.mkdir(exist_ok=True)
    bare = bare_loop(cfg, vocab_size, profile_path=RESULTS / "mfu_profile.txt" if args.profile else None)
    print("bare loop", bare, flush=True)
    ablations = {}
    for name in names:
        try:
            ablations[name] = bare_loop(cfg, vocab_size, **ablation_options(name))
        except Exception as error:  # one variant failing to compile or run must not cost the others their figures
            ablations[name] = {"error": f"{type(error).__name__}: {error}"[:1000]}
        print("bare loop,", name, ablations[name], flush=True)
    result = {
        "device": torch.cuda.get_device_name(), "data": data, "size": cfg.size, "precision": cfg.precision,
        "compile": cfg.compile, "max_length": cfg.max_length, "batch_size": cfg.batch_size,
        "bare_loop": bare, "bare_loop_ablations": ablations, "torch": torch.__version__,
    }
    if metrics is not None:
        result |= {
            "parameters": metrics["parameters"], "steps": metrics["steps"], "mfu": metrics["mfu"],
            "tokens_per_second": metrics["tokens_per_second"],
            "pipeline_share_of_bare_loop": round(metrics["tokens_per_second"] / bare["tokens_per_second"], 3),
        }
    save_result("mfu_bare" if metrics is None else "mfu", result)
    print()
    for name, figures in {"bare loop as pretrain() runs": bare, **ablations}.items():
        if "error" in figures:
            shown = figures["error"][:100]
        else:
            shown = f"{figures['mfu']:.2%} MFU, {figures['step_ms']} ms a step, {figures['peak_memory_gb']} GB at peak"
        print(f"{name:<56} {shown}")
    if metrics is not None:
        print(f"pipeline: MFU {metrics['mfu']:.2%}, {metrics['tokens_per_second']:,.0f} tokens/s")


if __name__ == "__main__":
    main()
