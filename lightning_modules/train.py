"""Pretraining and finetuning entry points: Lightning Trainer runs with resumable checkpoints.

Both functions may run inside a process that Lightning's `ddp` strategy re-launches (it runs sys.argv again
with LOCAL_RANK/NODE_RANK/WORLD_SIZE set), so everything before `fit` must be safe to run on every rank,
and only the global rank 0 touches the checkpoint directory's bookkeeping and writes the outputs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytorch_lightning as L
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from data_checks.io import DoclifeError, atomic_dir, first_line, read_json, write_json
from lightning_modules.callbacks import CurveRecorder, LastCheckpointEachEpoch, SaveOnException, logged_metric, write_csv
from lightning_modules.checkpoint import BaseCheckpoint, describe_shape, load_mlm, require_trainable
from lightning_modules.config import FinetuneConfig, PretrainConfig
from lightning_modules.data import ClassificationDataModule, MaskedLMDataModule
from lightning_modules.model import (
    build_classifier,
    build_mlm,
    compile_encoder_layers,
    encoder_flops_per_token,
    loading_model_files,
    peak_flops,
    quiet_transformers,
)
from lightning_modules.modules import ClassifierModule, MaskedLMModule
from lightning_modules.progress import ProgressLines, SparseRichProgressBar
from lightning_modules.snapshot import load_manifest

FINGERPRINT_FILE = "fingerprint.json"
CURVE_COLUMNS = ["step", "train_loss", "val_loss", "tokens_per_s", "nonpad_tokens_per_s", "mfu"]  # pretraining's
LAST_CHECKPOINT = "last.ckpt"

# ---------------------------------------------------------------------------------------------- helpers


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Hide the Lightning warnings that do not apply to these runs (scoped, so callers keep their filters)."""
    with warnings.catch_warnings():
        # Data is tokenised in memory and collated cheaply; DataLoader workers would cost more than they save.
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        # The checkpoint directory always holds our fingerprint.json; stale checkpoints were cleared already.
        warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
        # Resuming mid-epoch restarts that epoch with a fresh shuffle: harmless for step-based MLM pretraining.
        warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended.*")
        # Raised inside Lightning's own pytree helper against newer torch; nothing a user can act on.
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
        yield


def _launch_rank(devices: int) -> int:
    """Global rank of this process, known before the Trainer exists (from the launcher's environment)."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    node = int(os.environ.get("NODE_RANK", 0))
    return node * max(1, devices) + local


def _set_threads(accelerator: str, devices: int) -> None:
    """Share the CPU cores between the processes of this node when training runs on the CPU."""
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu:
        per_process = max(1, (os.cpu_count() or 1) // max(1, devices if isinstance(devices, int) else 1))
        torch.set_num_threads(per_process)


def _hash_files(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        if not path.is_file():
            raise DoclifeError(f"{path}: missing (run the previous stage first)")
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _past_length(state: dict[str, Any], cfg: PretrainConfig | FinetuneConfig) -> str | None:
    """Why the checkpoint `state` cannot continue to `cfg`'s training length, or None when it can.

    A checkpoint past a lowered length cannot be trained back down to it, and exporting it would hand on a
    model trained longer than params.yaml says: the run starts fresh instead.
    """
    if isinstance(cfg, PretrainConfig):
        trained, key, unit = int(state["global_step"]), "max_steps", "steps"
    else:
        # Epochs begun, the one the checkpoint was saved in included. Lightning 2.6 refuses a checkpoint only
        # when its current_epoch (epochs completed at the save) > max_epochs; one saved at the end of epoch
        # index max_epochs it resumes and stops at once, an epoch over the limit.
        progress = state["loops"]["fit_loop"]["epoch_progress"]["current"]
        trained, key, unit = int(progress["started"]), "max_epochs", "epochs"
    limit = getattr(cfg, key)
    if trained <= limit:
        return None
    return f"the checkpoint has trained {trained} {unit}, past {_section(cfg)}.{key}={limit}"


def _prepare_checkpoints(checkpoint_dir: Path, fingerprint: dict[str, Any], rank: int,
                         cfg: PretrainConfig | FinetuneConfig) -> tuple[Path | None, int | None]:
    """Return (checkpoint, its step) when one belongs to this exact run; otherwise clear stale checkpoints.

    The fingerprint leaves out only the length of training (max_steps / max_epochs), so raising it resumes;
    lowering it below what the checkpoint has trained starts fresh (see `_past_length`).
    """
    stored = checkpoint_dir / FINGERPRINT_FILE
    why = f"clearing checkpoints in {checkpoint_dir} that belong to another run"
    if stored.is_file() and read_json(stored) == fingerprint:
        # The readable checkpoint with the most steps: a kill -9 can tear the file being written, or stop the
        # run between writing step=N.ckpt and refreshing last.ckpt.
        found: list[tuple[int, Path, dict[str, Any]]] = []
        for path in checkpoint_dir.glob("*.ckpt"):
            try:
                state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
                found.append((int(state["global_step"]), path, state))
            except Exception as exc:  # a truncated file: any unpickling error
                rank_zero_info(f"doclife: skipping unreadable checkpoint {path.name} ({type(exc).__name__})")
        if found:
            step, path, state = max(found, key=lambda item: (item[0], item[1].name == LAST_CHECKPOINT))
            past = _past_length(state, cfg)
            if past is None:
                return path, step
            why = past
    if rank == 0:
        if checkpoint_dir.exists():
            rank_zero_info(f"doclife: starting fresh: {why}")
            shutil.rmtree(checkpoint_dir)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        write_json(stored, fingerprint)
    return None, None


def _on_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def _section(cfg: PretrainConfig | FinetuneConfig) -> str:
    return "pretrain" if isinstance(cfg, PretrainConfig) else "finetune"


def _require_devices(cfg: PretrainConfig | FinetuneConfig) -> None:
    """Refuse, before any work, GPUs that this machine does not have (params.yaml copied from a GPU host)."""
    if cfg.accelerator not in ("gpu", "cuda"):
        return
    found, section = torch.cuda.device_count(), _section(cfg)
    if found == 0:
        why = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA device is visible"
        raise DoclifeError(f"params.yaml: {section}.accelerator is {cfg.accelerator!r}, but {why}; set it to auto "
                           "(a GPU where there is one, else the CPU) or cpu")
    if isinstance(cfg.devices, int) and cfg.devices > found:
        raise DoclifeError(f"params.yaml: {section}.devices is {cfg.devices}, but this machine has {found} CUDA "
                           f"device{'s' if found > 1 else ''} (devices counts one node's; -1 takes them all)")


def _trainer(cfg: PretrainConfig | FinetuneConfig, callbacks: list[Callback], **limits: Any) -> L.Trainer:
    on_gpu = _on_gpu(cfg.accelerator)
    settings = dict(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        # "auto" is ddp as soon as there is more than one device; "fsdp" shards parameters instead.
        strategy=cfg.strategy,
        precision=cfg.precision,
        # Post-LN BERT is prone to loss spikes early on; BERT and the HF Trainer clip at 1.0 too.
        gradient_clip_val=cfg.max_grad_norm or None,
        gradient_clip_algorithm="norm",
        # Plain progress lines for a supervisor reading this process's output (see progress.py).
        callbacks=[*callbacks, ProgressLines(_section(cfg)), SparseRichProgressBar(metrics_every=20 if on_gpu else 1)],
        logger=False,  # curves go to our own CSV (for DVC plots); no logger directory to manage
        enable_model_summary=False,
        num_sanity_val_steps=0,
        # CPU runs are reproducible bit for bit. GPU runs are not whatever this says (SDPA's fused attention
        # kernels accumulate with atomics), so there deterministic kernels would only cost speed.
        deterministic=False if on_gpu else "warn",
        **limits,
    )
    try:
        return L.Trainer(**settings)
    except (MisconfigurationException, ValueError) as exc:  # Lightning's word for settings it cannot honour here
        raise DoclifeError(f"params.yaml: {_section(cfg)}: Lightning refuses these settings: {first_line(exc)}") from exc


def _export(model: torch.nn.Module, tokenizer: Any, model_dir: Path, state_dict: dict[str, Any] | None = None) -> None:
    """Hugging Face format (config, safetensors, tokenizer); `state_dict` overrides the module's own weights."""
    if state_dict is not None:
        # A state dict gathered from fsdp shards holds tied weights (the MLM decoder = the word embeddings) as
        # separate copies, which save_pretrained would write twice: keep the names the live module keeps.
        kept = {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()}
        state_dict = {name: tensor for name, tensor in state_dict.items() if name in kept}
    with atomic_dir(model_dir) as tmp, quiet_transformers():
        model.save_pretrained(str(tmp), state_dict=state_dict)
        tokenizer.save_pretrained(str(tmp))


def _load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    if not (path / "tokenizer.json").is_file():
        raise DoclifeError(f"{path}: no tokenizer.json (run the previous stage first)")
    with loading_model_files(path):
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


# ---------------------------------------------------------------------------------------------- pretrain


@_quiet_lightning()  # a context manager used as a decorator: the filters hold for the whole run
def pretrain(
    cfg: PretrainConfig,
    snapshot_dir: Path,
    tokenizer_dir: Path,
    model_dir: Path,
    checkpoint_dir: Path,
    metrics_path: Path,
    curve_path: Path,
    base: BaseCheckpoint | None = None,
) -> dict[str, Any]:
    """Masked-LM pretraining for `cfg.max_steps` steps, resuming from `checkpoint_dir` when it matches.

    `base` is the checkpoint `cfg.init_from` resolves to (flows/init_from.py): training continues from its
    weights, in its shape, with the tokenize stage's copy of its tokenizer. Rank 0 writes the model (with its
    tokenizer) to `model_dir`, the metrics json and the loss curve CSV. Every process returns the metrics. With
    max_steps 0 nothing is trained (see `_export_initial_encoder`).
    """
    started = time.perf_counter()
    snapshot_dir, tokenizer_dir, checkpoint_dir = Path(snapshot_dir), Path(tokenizer_dir), Path(checkpoint_dir)
    if cfg.init_from is not None and base is None:
        raise DoclifeError(f"pretrain: init_from is {cfg.init_from!r}, but no checkpoint was resolved from it "
                           "(flows.init_from.resolve_init_from)")
    _require_devices(cfg)
    _set_threads(cfg.accelerator, cfg.devices)
    manifest = load_manifest(snapshot_dir)
    tokenizer = _load_tokenizer(tokenizer_dir)
    tokenizer.model_max_length = cfg.max_length
    # Before any step: a checkpoint that cannot be trained, or a tokenizer that is not its own, is one line.
    checkpoint_vocab = require_trainable(base, tokenizer, tokenizer_dir, cfg.max_length) if base is not None else None
    if cfg.max_steps == 0:
        return _export_initial_encoder(cfg, manifest, tokenizer, Path(model_dir), checkpoint_dir, Path(metrics_path),
                                       Path(curve_path), started, base, checkpoint_vocab)

    run_settings = {k: v for k, v in asdict(cfg).items() if k not in ("max_steps", "checkpoint_every_n_steps")}
    fingerprint = {
        "stage": "pretrain",
        "content_sha256": manifest["content_sha256"],
        "tokenizer_sha256": _hash_files(tokenizer_dir / "tokenizer.json"),
        "config": run_settings,
    }
    if base is not None:  # the same directory with other weights is another run
        fingerprint["base_sha256"] = base.sha256
    ckpt_path, resumed_from = _prepare_checkpoints(checkpoint_dir, fingerprint, _launch_rank(cfg.devices), cfg)
    if resumed_from is not None:
        rank_zero_info(f"doclife: resuming from step {resumed_from} ({ckpt_path})")
        if resumed_from >= cfg.max_steps:
            rank_zero_info(f"doclife: step {resumed_from} already reaches max_steps={cfg.max_steps}; nothing left to train")

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = MaskedLMDataModule(tokenizer_dir, tokenizer, cfg.max_length, cfg.batch_size, cfg.mask_probability, cfg.seed,
                              cfg.validation_rows, manifest["content_sha256"])
    data.setup("fit")  # before any step (and before the model is built): a bad shard is one line
    network = _network(cfg, tokenizer, base, checkpoint_vocab)
    module = MaskedLMModule(network, cfg.learning_rate, cfg.warmup_steps, cfg.weight_decay, seed=cfg.seed)
    if cfg.compile:
        compile_encoder_layers(network)
    on_gpu = _on_gpu(cfg.accelerator)
    curve = CurveRecorder(
        pad_id=tokenizer.pad_token_id,
        flops_per_token=encoder_flops_per_token(network.config, cfg.max_length, cfg.mask_probability),
        peak_flops=peak_flops(torch.cuda.get_device_name(), cfg.precision) if on_gpu else None,
    )
    # Saved when each validation (every checkpoint_every_n_steps steps) ends, so the checkpoint's curve holds
    # that validation's loss; Lightning runs checkpoint callbacks after the others. The train loader has no
    # end, so the run stays in epoch 0 and "every epoch" means every validation.
    checkpoints = ModelCheckpoint(dirpath=checkpoint_dir, save_last=True, every_n_epochs=1, save_on_train_epoch_end=False)
    trainer = _trainer(
        cfg,
        # A Python exception (not kill -9, which the periodic checkpoints cover) saves last.ckpt on the way out.
        [checkpoints, SaveOnException(checkpoint_dir / LAST_CHECKPOINT), curve],
        max_steps=cfg.max_steps,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        # The train batches shard themselves across ranks (see PackedMLMBatches).
        use_distributed_sampler=False,
        # Validate on a step schedule (the train loader has no end), at the checkpoint interval.
        check_val_every_n_epoch=None,
        val_check_interval=min(cfg.checkpoint_every_n_steps, cfg.max_steps) * cfg.accumulate_grad_batches,
        log_every_n_steps=10,
    )
    fit_started = time.perf_counter()
    # Our own checkpoints hold callback state (the curve), so they load with weights_only=False.
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=False)
    fit_seconds = time.perf_counter() - fit_started
    if not (curve.rows and curve.rows[-1]["step"] == trainer.global_step and curve.rows[-1].get("val_loss") is not None):
        trainer.validate(module, datamodule=data, verbose=False)
    # The last step is not always on the checkpoint interval: save it (curve included) so a longer run
    # resumes from exactly here.
    trainer.save_checkpoint(checkpoint_dir / LAST_CHECKPOINT, weights_only=False)

    steps_this_run = trainer.global_step - (resumed_from or 0)
    train_tail = [r["train_loss"] for r in curve.rows if r.get("train_loss") is not None][-10:]
    metrics = {
        "train_loss": round(sum(train_tail) / len(train_tail), 6) if train_tail else None,
        "val_loss": curve.rows[-1].get("val_loss") if curve.rows else logged_metric(trainer, "val_loss"),
        "steps": trainer.global_step,
        "steps_this_run": steps_this_run,
        "resumed_from_step": resumed_from,
        # Global rates over this run's steps after the first (warm-up), validation excluded.
        **curve.steady_rates(),
        "parameters": sum(p.numel() for p in network.parameters()),
        "packed_rows": len(data.train_rows),
        "global_batch_rows": cfg.batch_size * trainer.world_size * cfg.accumulate_grad_batches,
        "fit_seconds": round(fit_seconds, 3),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "world_size": trainer.world_size,
        "snapshot": manifest["snapshot"],
        "content_sha256": manifest["content_sha256"],
        **_lineage(base),
    }
    # A collective call: under fsdp it gathers the shards, and rank 0 receives the full weights.
    full_state = trainer.strategy.lightning_module_state_dict()
    if trainer.is_global_zero:
        weights = {name.removeprefix("model."): tensor for name, tensor in full_state.items()}
        _export(module.model, tokenizer, Path(model_dir), weights)
        write_json(metrics_path, metrics)
        write_csv(Path(curve_path), CURVE_COLUMNS, curve.rows)
    return metrics


def _network(cfg: PretrainConfig, tokenizer: Any, base: BaseCheckpoint | None, checkpoint_vocab: int | None) -> torch.nn.Module:
    """The masked-LM network training starts from: a new encoder sized by `cfg`, or the checkpoint's (seeded first)."""
    if base is None:
        return build_mlm(cfg, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    network = load_mlm(base, len(tokenizer), checkpoint_vocab, cfg.dropout)
    rank_zero_info(f"doclife: pretrain.init_from {base.origin}: the model's shape comes from the checkpoint "
                   f"({describe_shape(network.config)}); pretrain.size and its four size fields are ignored")
    return network


def _lineage(base: BaseCheckpoint | None) -> dict[str, Any]:
    """The metrics' record of the checkpoint training started from (none without init_from: metrics as before)."""
    return {} if base is None else {"base_checkpoint": base.lineage()}


def _export_initial_encoder(cfg: PretrainConfig, manifest: dict[str, Any], tokenizer: Any, model_dir: Path,
                            checkpoint_dir: Path, metrics_path: Path, curve_path: Path, started: float,
                            base: BaseCheckpoint | None = None, checkpoint_vocab: int | None = None) -> dict[str, Any]:
    """max_steps 0: the encoder is exported as initialised, the very weights a pretraining run with this seed
    starts from, so finetuning starts from random weights. At a CPU budget that finetunes as well as the
    pretrained start and saves the stage's time (docs/pretraining-at-cpu-scale.md). Checkpoints of earlier
    runs are left as they are: raising max_steps again resumes from them. With `base`, the checkpoint's
    encoder is exported as it is: finetuning starts straight from its weights."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    network = _network(cfg, tokenizer, base, checkpoint_vocab)
    metrics = {
        "train_loss": None, "val_loss": None, "steps": 0, "steps_this_run": 0, "resumed_from_step": None,
        "tokens_per_second": None, "nonpad_tokens_per_second": None, "mfu": None,
        "parameters": sum(p.numel() for p in network.parameters()),
        "packed_rows": None, "global_batch_rows": None, "fit_seconds": 0.0,
        "wall_seconds": round(time.perf_counter() - started, 3), "world_size": 1,
        "snapshot": manifest["snapshot"], "content_sha256": manifest["content_sha256"], **_lineage(base),
    }
    if _launch_rank(cfg.devices) == 0:  # under a multi-node launcher every rank gets here; one writes
        checkpoint_dir.mkdir(parents=True, exist_ok=True)  # a DVC output of the stage
        _export(network, tokenizer, model_dir)
        write_json(metrics_path, metrics)
        write_csv(curve_path, CURVE_COLUMNS, [])
    return metrics


# ---------------------------------------------------------------------------------------------- finetune


@_quiet_lightning()
def finetune(
    cfg: FinetuneConfig,
    snapshot_dir: Path,
    pretrained_dir: Path,
    labels: list[str],
    model_dir: Path,
    checkpoint_dir: Path,
    metrics_path: Path,
    curve_path: Path,
) -> dict[str, Any]:
    """Classification finetuning from the encoder in `pretrained_dir`; exports the best epoch (val macro-F1).

    Rows whose label is not in `labels` are ignored. Resumes from `checkpoint_dir` when it matches.
    Rank 0 writes the model (with its tokenizer) to `model_dir`, the metrics json and the per-epoch curve.
    """
    started = time.perf_counter()
    snapshot_dir, pretrained_dir, checkpoint_dir = Path(snapshot_dir), Path(pretrained_dir), Path(checkpoint_dir)
    labels = list(labels)
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise DoclifeError(f"finetune: labels must be at least two distinct names, got {labels!r}")
    _require_devices(cfg)
    _set_threads(cfg.accelerator, cfg.devices)
    manifest = load_manifest(snapshot_dir)
    tokenizer = _load_tokenizer(pretrained_dir)

    fingerprint = {
        "stage": "finetune",
        "content_sha256": manifest["content_sha256"],
        "pretrained_sha256": _hash_files(pretrained_dir / "model.safetensors", pretrained_dir / "tokenizer.json"),
        "labels": labels,
        "config": {k: v for k, v in asdict(cfg).items() if k != "max_epochs"},
    }
    ckpt_path, resumed_from = _prepare_checkpoints(checkpoint_dir, fingerprint, _launch_rank(cfg.devices), cfg)
    if resumed_from is not None:
        rank_zero_info(f"doclife: resuming from step {resumed_from} ({ckpt_path})")

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_classifier(pretrained_dir, labels, cfg.dropout)
    data = ClassificationDataModule(
        snapshot_dir, tokenizer, labels, int(model.config.max_position_embeddings), cfg.batch_size,
        balanced_sampling=cfg.balance == "sampler", seed=cfg.seed,
    )
    data.setup("fit")  # class weights come from the train split, before the module exists
    # Balance by the loss or by the sampler, never both (that would over-correct); 0-weight for absent labels stays.
    inverse_frequency = data.class_weights()
    loss_weights = inverse_frequency if cfg.balance == "class_weights" else (inverse_frequency > 0).float()
    module = ClassifierModule(model, loss_weights, cfg.learning_rate, cfg.warmup_steps, cfg.weight_decay,
                              cfg.layer_decay, cfg.head_learning_rate)
    curve = CurveRecorder(per_epoch=True)
    checkpoints = ModelCheckpoint(
        dirpath=checkpoint_dir,
        filename="best-{epoch}-{step}",
        monitor="val_macro_f1",
        mode="max",
        save_top_k=1,
        # Save when validation ends, i.e. before LastCheckpointEachEpoch, so last.ckpt knows the best epoch.
        save_on_train_epoch_end=False,
    )
    # Early stopping sits before the last-checkpoint callback, so last.ckpt records that it stopped.
    stopping = EarlyStopping(monitor="val_macro_f1", mode="max", patience=cfg.patience)
    callbacks = [checkpoints, curve, stopping, LastCheckpointEachEpoch(checkpoint_dir / LAST_CHECKPOINT)]
    trainer = _trainer(cfg, callbacks, max_epochs=cfg.max_epochs, log_every_n_steps=10)
    fit_started = time.perf_counter()
    # Our own checkpoints hold callback state (the curve), so they load with weights_only=False.
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=False)
    fit_seconds = time.perf_counter() - fit_started

    best_path = checkpoints.best_model_path
    best_score = checkpoints.best_model_score
    metrics = {
        "best_val_macro_f1": None if best_score is None else round(float(best_score), 6),
        "best_epoch": None,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "resumed_from_step": resumed_from,
        "n_train": len(data.train_items),
        "n_validation": len(data.val_items),
        "n_ignored_rows": data.n_ignored,
        "balance": cfg.balance,
        "class_weights": {label: round(float(w), 6) for label, w in zip(labels, module.class_weights)},
        "fit_seconds": round(fit_seconds, 3),
        "wall_seconds": None,
        "world_size": trainer.world_size,
        "snapshot": manifest["snapshot"],
        "content_sha256": manifest["content_sha256"],
    }
    if trainer.is_global_zero:
        if best_path and Path(best_path).is_file():
            state = torch.load(best_path, map_location="cpu", weights_only=False)
            module.load_state_dict(state["state_dict"])
            metrics["best_epoch"] = int(state["epoch"])
        _export(module.model, tokenizer, Path(model_dir))
        metrics["wall_seconds"] = round(time.perf_counter() - started, 3)
        write_json(metrics_path, metrics)
        write_csv(Path(curve_path), ["epoch", "step", "train_loss", "val_loss", "val_macro_f1"], curve.rows)
    metrics["wall_seconds"] = round(time.perf_counter() - started, 3)
    return metrics
