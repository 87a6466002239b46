"""Typed settings for the tokenizer, pretraining, finetuning and evaluation stages.

Field names match the `tokenize`, `pretrain`, `finetune` and `evaluate` sections of params.yaml one to one.
Each `__post_init__` rejects values that would only fail later, deep inside a training run.
"""

from __future__ import annotations

from dataclasses import dataclass

from data_checks.io import DoclifeError

# Lightning's precision names (`Trainer(precision=...)`), canonical spellings only.
PRECISIONS = frozenset(
    {
        "64-true",
        "32-true",
        "16-true",
        "16-mixed",
        "bf16-true",
        "bf16-mixed",
        "transformer-engine",
        "transformer-engine-float16",
    }
)
BALANCING = ("class_weights", "sampler", "none")
ACCELERATORS = frozenset({"auto", "cpu", "gpu", "cuda", "mps", "tpu"})

# Named encoder sizes: (hidden_size, num_layers, num_heads, intermediate_size). `base` is BERT-base (~110M
# parameters with a 30k vocabulary); `custom` takes the four fields from params.yaml.
MODEL_SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (32, 2, 2, 64),
    "mini": (256, 4, 4, 1024),
    "small": (512, 4, 8, 2048),
    "medium": (512, 8, 8, 2048),
    "base": (768, 12, 12, 3072),
}


def _positive(section: str, **values: int | float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise DoclifeError(f"params.yaml: {section}.{name} must be > 0, got {value!r}")


def _non_negative(section: str, **values: int | float) -> None:
    for name, value in values.items():
        if value < 0:
            raise DoclifeError(f"params.yaml: {section}.{name} must be >= 0, got {value!r}")


def _check_hardware(section: str, accelerator: str, devices: int | str, num_nodes: int, strategy: str, precision: str) -> None:
    if accelerator not in ACCELERATORS:
        raise DoclifeError(f"params.yaml: {section}.accelerator must be one of {sorted(ACCELERATORS)}, got {accelerator!r}")
    # Lightning also accepts "auto" or -1 (all devices); anything else must be a positive count.
    if not (devices == "auto" or devices == -1 or (isinstance(devices, int) and devices > 0)):
        raise DoclifeError(f"params.yaml: {section}.devices must be a positive integer, -1 or 'auto', got {devices!r}")
    _positive(section, num_nodes=num_nodes)
    if not isinstance(strategy, str) or not strategy:
        raise DoclifeError(f"params.yaml: {section}.strategy must be a strategy name such as auto, ddp or fsdp, got {strategy!r}")
    if strategy.startswith("fsdp") and accelerator == "cpu":
        raise DoclifeError(f"params.yaml: {section}.strategy {strategy} needs accelerator gpu (Lightning's fsdp runs on CUDA devices only); use ddp on the CPU")
    if precision not in PRECISIONS:
        raise DoclifeError(f"params.yaml: {section}.precision must be one of {sorted(PRECISIONS)}, got {precision!r}")


@dataclass
class TokenizeConfig:
    vocab_size: int = 6000
    """Target WordPiece vocabulary size, special tokens and single characters included."""
    min_frequency: int = 2
    """A merge must occur at least this often in the training text to enter the vocabulary."""
    lowercase: bool = True
    """Lower-case Latin text before tokenising (CJK characters are unaffected)."""
    extend_vocabulary: int = 0
    """With pretrain.init_from (the checkpoint's tokenizer is used, vocab_size and lowercase are ignored): add up
    to this many corpus words it maps to [UNK], seen at least min_frequency times, most frequent first; their
    embedding rows start at the mean of the checkpoint's. 0: the checkpoint's tokenizer as it is."""
    sample_docs: int = 200000
    """The tokenizer learns from at most this many train and validation documents, those whose doc_id hashes
    lowest: its cost stays flat as the corpus grows, and the same snapshot always gives the same vocabulary."""
    shard_tokens: int = 16777216
    """Token ids per shard file of the encoded snapshot (about: shards end at a document boundary)."""

    def __post_init__(self) -> None:
        # Five special tokens plus room for at least a basic character alphabet.
        if self.vocab_size < 100:
            raise DoclifeError(f"params.yaml: tokenize.vocab_size must be >= 100, got {self.vocab_size!r}")
        _positive("tokenize", min_frequency=self.min_frequency, sample_docs=self.sample_docs,
                  shard_tokens=self.shard_tokens)
        _non_negative("tokenize", extend_vocabulary=self.extend_vocabulary)


@dataclass
class PretrainConfig:
    init_from: str | None = None
    """Continue from this checkpoint instead of a new encoder: a local Hugging Face directory (BERT: config.json,
    model.safetensors or pytorch_model.bin, tokenizer files), relative to the workspace or absolute, or
    `champion` (the registry's champion: each run continues from the last promoted model). Its shape replaces
    the size fields; its tokenizer replaces tokenize's. null: a new encoder of the size below."""
    size: str = "custom"
    """Named encoder size (tiny, mini, small, medium, base) or `custom` for the four fields below."""
    hidden_size: int = 128
    """Width of the encoder (size: custom); must be divisible by num_heads."""
    num_layers: int = 2
    """Number of transformer encoder layers."""
    num_heads: int = 4
    """Attention heads per layer."""
    intermediate_size: int = 256
    """Width of the feed-forward block inside each layer."""
    max_length: int = 64
    """Length of a packed row in tokens: documents ([CLS] ... [SEP]) are concatenated and cut into rows this long."""
    validation_rows: int = 4096
    """Packed validation rows scored at each checkpoint (the first ones of the validation shards, one fixed mask):
    validation costs the same whatever the corpus size."""
    mask_probability: float = 0.15
    """Fraction of ordinary tokens chosen as masked-LM targets (of those: 80% [MASK], 10% random, 10% kept)."""
    batch_size: int = 32
    """Packed rows per micro-batch on each device."""
    accumulate_grad_batches: int = 1
    """Micro-batches per optimizer step; global batch = batch_size x devices x num_nodes x this."""
    dropout: float = 0.0
    """Dropout inside the encoder while pretraining (0: short-budget MLM recipes train better without it)."""
    compile: bool = False
    """torch.compile each encoder layer (worth it on GPUs: `base` on an H200 trains 1.2x faster; compiling took
    seconds there before the kernels' launch settings were tuned too (model.INDUCTOR_OPTIONS), and takes minutes
    on a CPU, where it rarely pays)."""
    max_steps: int = 400
    """Optimizer steps in total; raising it and re-running resumes from the last checkpoint. 0: no pretraining,
    the encoder is exported as initialised and finetuning starts from random weights (from the checkpoint's
    weights with init_from)."""
    learning_rate: float = 1e-3
    """Peak AdamW learning rate, reached after warmup_steps."""
    warmup_steps: int = 40
    """Steps of linear warmup from 0 to learning_rate, followed by linear decay to 0 at max_steps."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay (not applied to biases and LayerNorm weights)."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this before each optimizer step (0: no clipping)."""
    seed: int = 7
    """Seed for weights, shuffling and masking."""
    accelerator: str = "auto"
    """Lightning accelerator: auto, cpu or gpu."""
    devices: int = 1
    """Devices (processes) per node."""
    num_nodes: int = 1
    """Machines taking part in the run."""
    strategy: str = "auto"
    """Lightning strategy: auto, ddp, fsdp, ..."""
    precision: str = "32-true"
    """Lightning precision name: 32-true on CPU, bf16-mixed on recent GPUs."""
    checkpoint_every_n_steps: int = 100
    """Save a resumable checkpoint (and measure validation loss) every this many steps."""

    def __post_init__(self) -> None:
        _positive(
            "pretrain",
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            batch_size=self.batch_size,
            validation_rows=self.validation_rows,
            accumulate_grad_batches=self.accumulate_grad_batches,
            learning_rate=self.learning_rate,
            checkpoint_every_n_steps=self.checkpoint_every_n_steps,
        )
        _non_negative("pretrain", max_steps=self.max_steps, warmup_steps=self.warmup_steps, weight_decay=self.weight_decay, max_grad_norm=self.max_grad_norm)
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from.strip()):
            raise DoclifeError(f"params.yaml: pretrain.init_from must be a checkpoint directory, `champion` or null, got {self.init_from!r}")
        if self.size != "custom":
            if self.size not in MODEL_SIZES:
                raise DoclifeError(f"params.yaml: pretrain.size must be custom or one of {sorted(MODEL_SIZES)}, got {self.size!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise DoclifeError(f"params.yaml: pretrain.dropout must be in [0, 1), got {self.dropout!r}")
        if self.hidden_size % self.num_heads:
            raise DoclifeError(
                f"params.yaml: pretrain.hidden_size ({self.hidden_size}) must be divisible by pretrain.num_heads ({self.num_heads})"
            )
        if self.max_length < 8:
            raise DoclifeError(f"params.yaml: pretrain.max_length must be >= 8, got {self.max_length!r}")
        if not 0.0 < self.mask_probability < 1.0:
            raise DoclifeError(f"params.yaml: pretrain.mask_probability must be in (0, 1), got {self.mask_probability!r}")
        _check_hardware("pretrain", self.accelerator, self.devices, self.num_nodes, self.strategy, self.precision)

    def dims(self) -> tuple[int, int, int, int]:
        """(hidden_size, num_layers, num_heads, intermediate_size) of the named size, or the custom fields."""
        if self.size == "custom":
            return (self.hidden_size, self.num_layers, self.num_heads, self.intermediate_size)
        return MODEL_SIZES[self.size]


@dataclass
class FinetuneConfig:
    batch_size: int = 32
    """Documents per batch on each device."""
    max_epochs: int = 6
    """Passes over the training split; raising it and re-running resumes from the last checkpoint."""
    patience: int = 3
    """Stop early after this many epochs without a better validation macro-F1."""
    balance: str = "class_weights"
    """Imbalanced labels: class_weights (loss weighted by inverse frequency), sampler (each epoch draws
    every label equally often, with replacement; plain loss) or none."""
    learning_rate: float = 5e-4
    """Peak AdamW learning rate, reached after warmup_steps (of the top encoder layer when layer_decay < 1)."""
    layer_decay: float = 1.0
    """Layer-wise learning-rate decay: encoder layer k below the top trains at learning_rate x layer_decay^k, the
    embeddings one step below the bottom layer (a pretrained start's lower layers move less). 1.0: off."""
    head_learning_rate: float | None = None
    """Peak learning rate of the new pooler and classification head. null: learning_rate."""
    warmup_steps: int = 20
    """Steps of linear warmup, followed by linear decay to 0 at the last step."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay (not applied to biases and LayerNorm weights)."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this before each optimizer step (0: no clipping)."""
    dropout: float = 0.1
    """Dropout in the encoder and before the classification head."""
    seed: int = 7
    """Seed for the classification head, shuffling and dropout."""
    accelerator: str = "auto"
    """Lightning accelerator: auto, cpu or gpu."""
    devices: int = 1
    """Devices (processes) per node."""
    num_nodes: int = 1
    """Machines taking part in the run."""
    strategy: str = "auto"
    """Lightning strategy: auto, ddp, fsdp, ..."""
    precision: str = "32-true"
    """Lightning precision name: 32-true on CPU, bf16-mixed on recent GPUs."""

    def __post_init__(self) -> None:
        _positive(
            "finetune",
            batch_size=self.batch_size,
            max_epochs=self.max_epochs,
            learning_rate=self.learning_rate,
            patience=self.patience,
        )
        _non_negative("finetune", warmup_steps=self.warmup_steps, weight_decay=self.weight_decay, max_grad_norm=self.max_grad_norm)
        if not 0.0 < self.layer_decay <= 1.0:
            raise DoclifeError(f"params.yaml: finetune.layer_decay must be in (0, 1], got {self.layer_decay!r}")
        if self.head_learning_rate is not None:
            _positive("finetune", head_learning_rate=self.head_learning_rate)
        if self.balance not in BALANCING:
            raise DoclifeError(f"params.yaml: finetune.balance must be one of {list(BALANCING)}, got {self.balance!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise DoclifeError(f"params.yaml: finetune.dropout must be in [0, 1), got {self.dropout!r}")
        _check_hardware("finetune", self.accelerator, self.devices, self.num_nodes, self.strategy, self.precision)


@dataclass
class EvaluateConfig:
    batch_size: int = 128
    """Documents per forward pass when scoring the test split."""

    def __post_init__(self) -> None:
        _positive("evaluate", batch_size=self.batch_size)
