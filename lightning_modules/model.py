"""The networks: small BERT encoders built from a config (never downloaded), as plain transformers modules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from torch import nn
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification
from transformers.utils import logging as hf_logging

from data_checks.io import DoclifeError, first_line
from lightning_modules.config import PretrainConfig


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' loading chatter (weight-loading progress bar, "newly initialized" notes)."""
    previous = hf_logging.get_verbosity()
    progress_bar = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)
        if progress_bar:
            hf_logging.enable_progress_bar()


@contextmanager
def loading_model_files(model_dir: Path) -> Iterator[None]:
    """Around transformers' from_pretrained calls: quiet, and a torn or foreign file in `model_dir` (a copy cut
    short, a hand-edited config) becomes one line naming the directory instead of a library traceback."""
    try:
        with quiet_transformers():
            yield
    except (OSError, ValueError, SafetensorError, StrictDataclassError) as exc:
        raise DoclifeError(f"{model_dir}: cannot load the model files ({first_line(exc)})") from exc


def build_mlm(cfg: PretrainConfig, vocab_size: int, pad_token_id: int) -> BertForMaskedLM:
    """A randomly initialised BERT with a masked-LM head, sized by `cfg` (a named size or the custom fields)."""
    hidden, layers, heads, intermediate = cfg.dims()
    config = BertConfig(
        # Rounded up to a multiple of 64 so the masked-LM decoder's matmuls run on aligned tensor-core kernels
        # (10,878 rows ran on kernels for unaligned sizes: 4% of a `base` step on an H200). The extra ids never
        # occur in the input, and training soon gives them no probability.
        vocab_size=-(-vocab_size // 64) * 64,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        # Positions beyond max_length never occur: packed rows are max_length long, finetuning truncates there.
        max_position_embeddings=cfg.max_length,
        type_vocab_size=2,
        pad_token_id=pad_token_id,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
    )
    model = BertForMaskedLM._from_config(config, attn_implementation="sdpa")
    swap_layer_norms(model.bert, AutocastLayerNorm)
    return model


class AutocastLayerNorm(nn.LayerNorm):
    """LayerNorm that computes in float32 but, under autocast, returns autocast's dtype (bf16 or fp16).

    CUDA's autocast runs LayerNorm in float32 and hands its float32 output on, so in a post-LN BERT the whole
    residual stream (each layer's input, its skip connections and their gradients) is float32: twice the bytes
    of the memory-bound kernels around every matmul. This keeps the stream in bf16, as Megatron-LM does by
    default, and as CPU autocast already does; the normalisation itself stays in float32. Without autocast it
    is exactly nn.LayerNorm, and its parameters are nn.LayerNorm's, so checkpoints and exports are unchanged.
    """

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        device = hidden.device.type
        if not torch.is_autocast_enabled(device):
            return super().forward(hidden)
        # The parameters too: fsdp's bf16-mixed hands them over in bf16.
        weight, bias = (None if p is None else p.float() for p in (self.weight, self.bias))
        normalised = F.layer_norm(hidden.float(), self.normalized_shape, weight, bias, self.eps)
        return normalised.to(torch.get_autocast_dtype(device))


def swap_layer_norms(module: nn.Module, to: type[nn.LayerNorm]) -> None:
    """Give every LayerNorm in `module` the class `to`, in place: LayerNorm's subclasses differ only in forward."""
    for submodule in module.modules():
        if isinstance(submodule, nn.LayerNorm):
            submodule.__class__ = to


# Inductor settings for compiled layers. Coordinate-descent tuning tries each generated Triton kernel's launch
# settings once, while compiling, and keeps the defaults unless others measure faster: a `base` step on an H200
# took 97.0 ms instead of 97.9 (bench.mfu's ablation; inside the run-to-run spread).
INDUCTOR_OPTIONS = {"coordinate_descent_tuning": True}


def compile_encoder_layers(model: BertForMaskedLM | BertForSequenceClassification, options: dict | None = None) -> None:
    """torch.compile each encoder layer in place (parameter names, and so checkpoints, stay those of the plain module).

    Layer by layer, not the whole encoder: the attention mask is then decided outside the compiled code, where
    transformers drops it for full rows, and SDPA runs its fused kernel (cuDNN's flash attention on an H200).
    Compiled as a whole (transformers 5.17, torch 2.11), attention ran as unfused float32 matmuls and softmax,
    a third of a `base` step. One compiled graph serves every layer, so compiling takes seconds, not minutes.
    `options` are Inductor settings over INDUCTOR_OPTIONS.
    """
    for layer in model.bert.encoder.layer:
        layer.compile(options=INDUCTOR_OPTIONS | (options or {}))


def build_classifier(pretrained_dir: Path, labels: list[str], dropout: float) -> BertForSequenceClassification:
    """BERT with a fresh classification head on top of the pretrained encoder saved in `pretrained_dir`."""
    # The "newly initialized classifier / unused MLM head weights" report is exactly what finetuning intends.
    with loading_model_files(pretrained_dir):
        model = BertForSequenceClassification.from_pretrained(
            str(pretrained_dir),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            classifier_dropout=dropout,
            problem_type="single_label_classification",
            attn_implementation="sdpa",
            local_files_only=True,
        )
    # The residual stream in the autocast dtype, as in pretraining (see AutocastLayerNorm).
    swap_layer_norms(model.bert, AutocastLayerNorm)
    # from_pretrained returns the model in eval mode, and Lightning keeps submodule modes as it finds them:
    # without this, dropout would stay off during finetuning.
    return model.train()


def encoder_flops_per_token(config: BertConfig, seq_len: int, mask_probability: float) -> float:
    """Training FLOPs per input token (forward + backward = 3 x forward, 2 FLOPs per multiply-add).

    PaLM's accounting: 6 x the encoder's matmul parameters, plus 12 x layers x hidden x seq_len for the
    attention scores and their weighted sum, plus the masked-LM head, which runs only at the masked
    positions (a `mask_probability` share of tokens).
    """
    h, i, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per_layer = 4 * h * h + 2 * h * i  # Q, K, V, output projections; the two feed-forward matrices
    head = h * h + h * config.vocab_size  # transform dense + decoder
    return 6.0 * n * per_layer + 12.0 * n * h * seq_len + 6.0 * head * mask_probability


# Dense peak throughput (FLOP/s) by device name fragment and precision family, from the vendors' sheets.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.4e12, "fp32": 66.9e12},
    "H100": {"bf16": 989.4e12, "fp32": 66.9e12},
    "A100": {"bf16": 312e12, "fp32": 19.5e12},
    "L40S": {"bf16": 362e12, "fp32": 91.6e12},
    "L4": {"bf16": 121e12, "fp32": 30.3e12},
    "A10": {"bf16": 125e12, "fp32": 31.2e12},
}


def peak_flops(device_name: str, precision: str) -> float | None:
    """The device's dense peak for `precision` (bf16/16 families vs 32-bit), or None when unknown (CPUs)."""
    family = "bf16" if ("16" in precision and "32" not in precision) else "fp32"
    for fragment, peaks in PEAK_FLOPS.items():
        if fragment in device_name:
            return peaks[family]
    return None
