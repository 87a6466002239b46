"""Pretraining throughput: doclife vs the Hugging Face Trainer, same CPU, model, data and global batch.

doclife packs documents into full rows; the reference is `transformers.Trainer` with
`DataCollatorForLanguageModeling` on documents padded to max_length (the usual recipe). Both train the same
`BertForMaskedLM` config (SDPA attention) with AdamW, the same learning-rate schedule, batch and thread count.
Rounds alternate (doclife, HF, doclife, HF, ...) so drifting load on a shared machine hits both alike.
Rates exclude each run's first step (warm-up) and doclife's validation.

    python bench/throughput.py [--size custom|mini|...] [--steps 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from bench.common import CORPUS, save_result, write_snapshot  # noqa: E402
from lightning_modules.config import PretrainConfig, TokenizeConfig  # noqa: E402
from lightning_modules.model import build_mlm, quiet_transformers  # noqa: E402
from lightning_modules.tokenizer import train_tokenizer  # noqa: E402
from lightning_modules.train import _load_tokenizer, pretrain  # noqa: E402


def _snapshot(root: Path, n_docs: int) -> tuple[Path, str]:
    if CORPUS.is_file():
        from bench.common import require_corpus, sentiment_split

        rows = sentiment_split(require_corpus())
        rows = rows[rows["split"] != "test"].head(n_docs).copy()
        rows.loc[rows.index[: len(rows) // 10], "split"] = "validation"
        return write_snapshot(rows, root / "snapshot"), f"{CORPUS.name} (first {len(rows)} non-test reviews)"
    from lightning_modules.synthetic import make_snapshot

    return make_snapshot(root / "snapshot", n_docs=n_docs, seed=0), f"generated bilingual sample ({n_docs} docs)"


def run_doclife(cfg: PretrainConfig, root: Path, snapshot: Path, tag: str) -> dict:
    out = root / tag
    metrics = pretrain(cfg, snapshot, root / "tokenizer", out / "model", out / "ckpt", out / "m.json", out / "c.csv")
    return {"tokens_per_s": metrics["tokens_per_second"], "nonpad_tokens_per_s": metrics["nonpad_tokens_per_second"],
            "final_train_loss": metrics["train_loss"]}


def run_hf(cfg: PretrainConfig, root: Path, snapshot: Path, tag: str) -> dict:
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments

    from lightning_modules.snapshot import read_split

    tokenizer = _load_tokenizer(root / "tokenizer")
    texts = read_split(snapshot, ["train"])["text"].tolist()
    encoded = tokenizer(texts, truncation=True, max_length=cfg.max_length, padding="max_length")
    dataset = [{"input_ids": i, "attention_mask": a} for i, a in zip(encoded["input_ids"], encoded["attention_mask"])]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=cfg.mask_probability)
    counts: list[tuple[int, int]] = []  # (tokens, non-pad tokens) per batch, in order

    def counting_collator(features: list[dict]) -> dict:
        batch = collator(features)
        counts.append((batch["input_ids"].numel(), int(batch["attention_mask"].sum())))
        return batch

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003
            self.ends.append(time.perf_counter())

    torch.manual_seed(cfg.seed)
    model = build_mlm(cfg, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    clock = StepClock()
    args = TrainingArguments(
        output_dir=str(root / tag),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.accumulate_grad_batches,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type="linear",
        logging_steps=10**6,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        seed=cfg.seed,
        disable_tqdm=True,
    )
    with quiet_transformers():
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=counting_collator, callbacks=[clock])
        result = trainer.train()
    acc = cfg.accumulate_grad_batches
    seconds = clock.ends[-1] - clock.ends[0]  # steps 2..N
    timed = counts[acc : acc * len(clock.ends)]
    return {
        "tokens_per_s": round(sum(c[0] for c in timed) / seconds, 1),
        "nonpad_tokens_per_s": round(sum(c[1] for c in timed) / seconds, 1),
        "final_train_loss": round(float(result.training_loss), 4),
        "nonpad_fraction": round(sum(c[1] for c in counts) / sum(c[0] for c in counts), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="custom", help="named model size; custom = hidden 256, 4 layers, 4 heads")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--docs", type=int, default=20000)
    args = parser.parse_args()

    torch.set_num_threads(os.cpu_count() or 1)
    cfg = PretrainConfig(
        size=args.size, hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024,
        max_length=args.max_length, batch_size=args.batch_size, max_steps=args.steps, warmup_steps=2,
        learning_rate=5e-4, checkpoint_every_n_steps=args.steps, accelerator="cpu",
    )
    with tempfile.TemporaryDirectory(prefix="doclife-bench-") as tmp:
        root = Path(tmp)
        snapshot, data_name = _snapshot(root, args.docs)
        train_tokenizer(TokenizeConfig(vocab_size=8000), snapshot, root / "tokenizer")
        ours, theirs = [], []
        for r in range(args.rounds):
            ours.append(run_doclife(replace(cfg, seed=cfg.seed + r), root, snapshot, f"doclife{r}"))
            print("doclife round", r, ours[-1], flush=True)
            theirs.append(run_hf(replace(cfg, seed=cfg.seed + r), root, snapshot, f"hf{r}"))
            print("hf      round", r, theirs[-1], flush=True)

    def med(runs: list[dict], key: str) -> float:
        return statistics.median(x[key] for x in runs)

    result = {
        "data": data_name,
        "model": {"size": cfg.size, "dims(hidden,layers,heads,ffn)": list(cfg.dims()), "max_length": cfg.max_length},
        "global_batch_rows": cfg.batch_size,
        "steps_per_run": cfg.max_steps,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "doclife": {"tokens_per_s": med(ours, "tokens_per_s"), "nonpad_tokens_per_s": med(ours, "nonpad_tokens_per_s")},
        "hf_trainer": {"tokens_per_s": med(theirs, "tokens_per_s"), "nonpad_tokens_per_s": med(theirs, "nonpad_tokens_per_s"),
                       "nonpad_fraction": med(theirs, "nonpad_fraction")},
        "ratio_tokens_per_s": round(med(ours, "tokens_per_s") / med(theirs, "tokens_per_s"), 3),
        "ratio_nonpad_tokens_per_s": round(med(ours, "nonpad_tokens_per_s") / med(theirs, "nonpad_tokens_per_s"), 3),
        # Adjacent runs share the machine's load best: their ratios show how much the medians owe to noise.
        "ratio_per_round": [
            {"tokens_per_s": round(o["tokens_per_s"] / t["tokens_per_s"], 3),
             "nonpad_tokens_per_s": round(o["nonpad_tokens_per_s"] / t["nonpad_tokens_per_s"], 3)}
            for o, t in zip(ours, theirs)
        ],
        "per_round": {"doclife": ours, "hf_trainer": theirs},
        "torch": torch.__version__,
    }
    save_result("throughput", result)


if __name__ == "__main__":
    main()
