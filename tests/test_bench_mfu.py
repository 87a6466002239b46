"""The MFU benchmark's bare-loop variants: each must train the same network, or its figure means nothing."""

from __future__ import annotations

import pytest
import torch

from bench.mfu import ABLATIONS, FusedQKVSelfAttention, ablation_options, bare_loop, use_fused_qkv
from lightning_modules.config import PretrainConfig
from lightning_modules.model import build_mlm

TINY = PretrainConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_length=16, batch_size=4)


def test_fused_qkv_attention_computes_what_transformers_computes() -> None:
    torch.manual_seed(0)
    reference = build_mlm(TINY, vocab_size=128, pad_token_id=0).train()
    fused = build_mlm(TINY, vocab_size=128, pad_token_id=0).train()
    fused.load_state_dict(reference.state_dict())
    use_fused_qkv(fused)
    assert all(type(layer.attention.self) is FusedQKVSelfAttention for layer in fused.bert.encoder.layer)
    assert list(fused.state_dict()) == list(reference.state_dict())  # checkpoints and exports unchanged
    ids = torch.randint(5, 128, (3, TINY.max_length))
    weights = torch.randn(3, TINY.max_length, 128)  # a loss that reaches every logit differently
    for model in (reference, fused):
        torch.manual_seed(1)  # the same dropout masks in both
        (model(input_ids=ids).logits * weights).sum().backward()
    torch.testing.assert_close(fused(input_ids=ids).logits.detach(), reference(input_ids=ids).logits.detach())
    for (name, expected), actual in zip(reference.named_parameters(), fused.parameters()):
        # The key bias's true gradient is zero (softmax ignores a constant shift); both compute rounding noise.
        if not name.endswith("key.bias"):
            torch.testing.assert_close(actual.grad, expected.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_ablations_combine_with_plus_and_unknown_names_are_refused() -> None:
    assert ablation_options("fused_qkv+batch_x2") == {"fused_qkv": True, "batch_size_factor": 2}
    assert ablation_options("no_compile+encoder_stack_compiled") == {"compile": "stack"}  # the later one wins
    assert ablation_options("max_autotune+cuda_graphs") == {"inductor": {"max_autotune": True, "triton.cudagraphs": True}}
    with pytest.raises(KeyError, match="unknown ablation 'fused_qvk'"):
        ablation_options("fused_qkv+fused_qvk")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["none", "as_pretrain", "fused_qkv+encoder_stack_compiled",
                                  "whole_encoder_compiled+float32_residual_stream+no_coordinate_descent_tuning"])
def test_bare_loop_variants_train_on_the_cpu(name: str) -> None:
    # Compiled variants run Inductor's CPU code here: a variant that cannot even build fails on the CPU, not
    # minutes into a GPU session.
    special = {"none": {"compile": False}, "as_pretrain": {"compile": True}}
    options = special[name] if name in special else ablation_options(name)
    figures = bare_loop(TINY, vocab_size=128, steps=2, warmup=1, **options)
    assert figures["tokens_per_second"] > 0 and figures["mfu"] is None  # no known peak on a CPU
    assert figures["graph_breaks"] == 0


def test_every_ablation_changes_a_known_option_of_the_bare_loop() -> None:
    parameters = set(bare_loop.__code__.co_varnames[: bare_loop.__code__.co_argcount])
    for name, options in ABLATIONS.items():
        assert options and set(options) <= parameters, name


@pytest.mark.slow
def test_the_bf16_residual_stream_moves_fewer_bytes_in_the_generated_kernels() -> None:
    # bench.layer_bytes's figures rest on Inductor's byte count seeing each policy's dtypes: the float32 stream
    # must cost the generated kernels (LayerNorm, residual adds, casts) more, and the matmuls nothing.
    from bench.layer_bytes import count_layer_bytes
    from bench.residual_precision import Float32LayerNorm

    bf16 = count_layer_bytes(TINY, rows=2)
    float32 = count_layer_bytes(TINY, rows=2, norm=Float32LayerNorm)
    assert bf16["generated_kernels"] > 0 and bf16["library_kernels"] > 0
    assert float32["generated_bytes"] > 1.15 * bf16["generated_bytes"]
    assert float32["library_bytes"] == bf16["library_bytes"]
