"""Bytes the kernels of one compiled `base` encoder layer read and write in a training step, by Inductor's count.

bench.mfu prices a change on a GPU. This counts, on any machine, what a change does to the memory traffic of
the kernels Inductor generates for a layer (LayerNorm, GELU, residual adds, casts: the memory-bound share of
a step), apart from those it calls in libraries for (matmuls, attention). The counts are Inductor's scheduler's
(`GraphLowering.count_bytes`: each fused kernel's reads and writes) for the code it generates here, on the CPU,
whose fusion can differ from CUDA's: read the ratios between variants, not the bytes.

Counts are exact functions of the shapes, so two batch sizes split them into a per-token part and a fixed one
(the weights), and scale them to a step of bench.mfu's batch: 128 rows of 512 tokens through 12 layers.

    python -m bench.layer_bytes
"""

from __future__ import annotations

import logging
from dataclasses import replace

import torch
import torch._inductor.metrics as inductor_metrics
from torch import nn
from torch._inductor.compile_fx import inductor_metrics_log as metrics_log

from bench.common import save_result
from bench.mfu import use_fused_qkv
from bench.residual_precision import Float32LayerNorm
from lightning_modules.config import PretrainConfig
from lightning_modules.model import INDUCTOR_OPTIONS, build_mlm, swap_layer_norms

# Variants of the layer as pretrain() builds it (bf16 residual stream, Q, K and V as three matmuls).
VARIANTS = {
    "as pretrain() runs": {},
    # CUDA autocast's LayerNorm hands float32 on (emulated here: the CPU's autocast hands bf16 on).
    "float32_residual_stream": {"norm": Float32LayerNorm},
    "fused_qkv": {"fused_qkv": True},
    # Two layers compiled as one graph (bench.mfu's encoder_stack_compiled), counted per layer: what fusion
    # across a layer boundary saves.
    "encoder_stack_compiled": {"stacked": True},
}


def _drop(record: logging.LogRecord) -> bool:
    return False


def count_layer_bytes(
    cfg: PretrainConfig, rows: int, norm: type[nn.LayerNorm] | None = None, fused_qkv: bool = False, stacked: bool = False
) -> dict:
    """Bytes and kernels of one encoder layer's forward and backward under bf16 autocast, for `rows` rows of
    `cfg.max_length` tokens: those of Inductor's generated kernels and those of library ("extern") kernels.
    `stacked`: two layers compiled as one graph, counted per layer."""
    torch._dynamo.reset()
    inductor_metrics.reset()
    torch.manual_seed(0)
    hidden_size, _, heads, intermediate = cfg.dims()
    layers = 2 if stacked else 1
    cfg = replace(cfg, size="custom", hidden_size=hidden_size, num_layers=layers, num_heads=heads,
                  intermediate_size=intermediate)
    model = build_mlm(cfg, vocab_size=64, pad_token_id=0).train()
    if norm is not None:
        swap_layer_norms(model.bert, norm)
    if fused_qkv:
        use_fused_qkv(model)
    layer = model.bert.encoder if stacked else model.bert.encoder.layer[0]
    layer.compile(dynamic=False, options=INDUCTOR_OPTIONS)
    # The stream's dtype between layers is the policy's: float32 from a float32 LayerNorm, else bf16.
    stream = torch.float32 if norm is Float32LayerNorm else torch.bfloat16
    hidden = torch.randn(rows, cfg.max_length, hidden_size, dtype=stream, requires_grad=True)
    # Inductor counts bytes only while its metrics log is on (its records, a screenful each, are dropped
    # here); a cached graph would skip the count.
    torch._logging.set_logs(inductor_metrics=True)
    metrics_log.addFilter(_drop)
    try:
        with torch._inductor.config.patch(force_disable_caches=True), torch.autocast("cpu", dtype=torch.bfloat16):
            output = layer(hidden)[0]  # a layer's tuple, the encoder's ModelOutput
            output.float().sum().backward()
    finally:
        metrics_log.removeFilter(_drop)
        torch._logging.set_logs()
    generated = [count for node, count in inductor_metrics.nodes_num_elem if not node.is_extern()]
    extern = [count for node, count in inductor_metrics.nodes_num_elem if node.is_extern()]
    # nodes_num_elem holds bytes // 4.
    return {"generated_bytes": 4 * sum(generated) // layers, "generated_kernels": len(generated) // layers,
            "library_bytes": 4 * sum(extern) // layers, "library_kernels": len(extern) // layers}


def per_step(cfg: PretrainConfig, rows: int = 128, layers: int = 12, **variant) -> dict:
    """Counts at 1 and 2 rows, scaled to a step of `rows` rows through `layers` layers."""
    one, two = count_layer_bytes(cfg, 1, **variant), count_layer_bytes(cfg, 2, **variant)
    figures = {}
    for kind in ("generated", "library"):
        per_row = two[f"{kind}_bytes"] - one[f"{kind}_bytes"]
        fixed = one[f"{kind}_bytes"] - per_row
        figures[f"{kind}_gb_per_step"] = round(layers * (fixed + rows * per_row) / 1e9, 2)
        figures[f"{kind}_bytes_per_token_per_layer"] = round(per_row / cfg.max_length)
        figures[f"{kind}_kernels_per_layer"] = one[f"{kind}_kernels"]
    return figures


def main() -> None:
    cfg = PretrainConfig(size="base", max_length=512)
    results = {}
    for name, variant in VARIANTS.items():
        results[name] = per_step(cfg, **variant)
        print(name, results[name], flush=True)
    save_result("layer_bytes", {"size": "base", "max_length": cfg.max_length, "rows": 128, "layers": 12,
                                "variants": results, "torch": torch.__version__})
    base = results["as pretrain() runs"]["generated_gb_per_step"]
    print()
    for name, figures in results.items():
        print(f"{name:<28} generated kernels {figures['generated_gb_per_step']:>6.1f} GB a step "
              f"({figures['generated_gb_per_step'] / base:.2f}x), {figures['generated_kernels_per_layer']} kernels a layer; "
              f"library kernels {figures['library_gb_per_step']:.1f} GB")


if __name__ == "__main__":
    main()
