"""Pretraining data at scale: tokenize once into token shards, then stream them, at 100k and at 10M documents.

For each corpus size a snapshot of generated short bilingual documents is written into a temporary directory,
then, each in a fresh process (so peak RSS is the stage's own):

- tokenize: the tokenizer trained on its bounded sample, every train and validation document encoded into
  shards: wall time and peak RSS;
- pretrain: time from the process's start to the end of its first optimizer step (imports, shard checks,
  model, Lightning set-up included) and peak RSS of the rank over a short run.

On the 100k snapshot, steady-state tokens/s streamed from the memory-mapped shards is compared, in alternating
rounds of the same run, with the same batches read from one in-memory tensor (the path before token shards,
which tokenised the whole split into memory in every rank's setup).

    python -m bench.pretrain_scale [--sizes 100000,10000000] [--steps 30] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

from bench.common import peak_rss_gb, save_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORDS_EN = ("the a today we really people think about new city weekend story football match team coach computer "
            "software network chip robot noodles recipe spicy kitchen tea airport hotel journey beach museum").split()
WORDS_ZH = list("今天我们非常大家觉得一个新的城市周末故事足球比赛球队教练电脑软件网络芯片面条饺子厨房机场酒店旅行海滩")
LABELS = ("sports", "technology", "food", "travel")


def write_generated_snapshot(out_dir: Path, n_docs: int, seed: int = 0, chunk: int = 500_000) -> Path:
    """corpus.parquet + manifest.json of `n_docs` short documents (8-24 words or 10-40 characters), written a
    chunk at a time (bounded memory); doc ids are zero-padded numbers, so the file is in doc_id order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = np.array(["train"] * 8 + ["validation", "test"])
    with pq.ParquetWriter(out_dir / "corpus.parquet", pa.schema([(c, pa.string()) for c in
                                                                 ("doc_id", "text", "label", "split")])) as writer:
        for start in range(0, n_docs, chunk):
            n = min(chunk, n_docs - start)
            chinese = rng.random(n) < 0.5
            lengths = np.where(chinese, rng.integers(10, 41, n), rng.integers(8, 25, n))
            en, zh = rng.integers(0, len(WORDS_EN), int(lengths.sum())), rng.integers(0, len(WORDS_ZH), int(lengths.sum()))
            texts, at = [], 0
            for is_zh, k in zip(chinese.tolist(), lengths.tolist()):
                texts.append("".join(WORDS_ZH[i] for i in zh[at:at + k]) if is_zh else " ".join(WORDS_EN[i] for i in en[at:at + k]))
                at += k
            ids = np.arange(start, start + n)
            writer.write_table(pa.table({
                "doc_id": [f"{i:012d}" for i in ids.tolist()], "text": texts,
                "label": [LABELS[i] for i in (ids % 4).tolist()], "split": splits[ids % 10].tolist(),
            }))
    (out_dir / "manifest.json").write_text(json.dumps(
        {"snapshot": f"snap-generated-{n_docs}", "content_sha256": f"generated-{n_docs}-{seed}", "rows": n_docs}))
    return out_dir


def _child(command: list[str]) -> dict:
    """Run `python -m bench.pretrain_scale --child ...`; return its JSON and when it printed its first step."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "bench.pretrain_scale", "--child", *command], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first_step, result, tail = None, None, []
    for line in process.stdout:
        if first_step is None and line.startswith("doclife-progress pretrain step=1 "):
            first_step = time.perf_counter() - started
        if line.startswith("BENCH_RESULT "):
            result = json.loads(line.removeprefix("BENCH_RESULT "))
        tail = (tail + [line])[-20:]
    if process.wait() != 0 or result is None:
        raise SystemExit("".join(tail))
    return result | ({"first_step_seconds": round(first_step, 2)} if first_step is not None else {})


def child_tokenize(snapshot: Path, tokenizer: Path) -> dict:
    from lightning_modules.config import TokenizeConfig
    from lightning_modules.tokenizer import train_tokenizer

    measures = train_tokenizer(TokenizeConfig(vocab_size=8000), snapshot, tokenizer)
    return {key: measures[key] for key in ("n_texts", "n_corpus_texts", "train_tokens", "validation_tokens", "shards",
                                           "train_seconds", "wall_seconds")} | {"peak_rss_gb": peak_rss_gb()}


def child_pretrain(snapshot: Path, tokenizer: Path, out: Path, steps: int, in_memory: bool, seed: int) -> dict:
    from lightning_modules import data
    from lightning_modules.config import PretrainConfig
    from lightning_modules.token_shards import PackedRows
    from lightning_modules.train import pretrain

    if in_memory:  # the same batches, every packed row read into one tensor first (the path before shards)
        open_rows = data.MaskedLMDataModule.setup

        def setup_in_memory(self: data.MaskedLMDataModule, stage: str | None = None) -> None:
            open_rows(self, stage)
            if isinstance(self.train_rows, PackedRows):
                self.train_rows = self.train_rows.in_memory()

        data.MaskedLMDataModule.setup = setup_in_memory
    cfg = PretrainConfig(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024, max_length=128,
                         batch_size=32, max_steps=steps, warmup_steps=2, learning_rate=5e-4,
                         checkpoint_every_n_steps=steps, accelerator="cpu", seed=seed)
    metrics = pretrain(cfg, snapshot, tokenizer, out / "model", out / "ckpt", out / "metrics.json", out / "curve.csv")
    return {"tokens_per_s": metrics["tokens_per_second"], "packed_rows": metrics["packed_rows"],
            "peak_rss_gb": peak_rss_gb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,10000000", help="comma-separated corpus sizes (documents)")
    parser.add_argument("--steps", type=int, default=30, help="pretraining steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="streamed / in-memory rounds on the smallest size")
    parser.add_argument("--name", default="pretrain_scale")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "tokenize":
            result = child_tokenize(Path(rest[0]), Path(rest[1]))
        else:
            result = child_pretrain(Path(rest[0]), Path(rest[1]), Path(rest[2]), int(rest[3]), rest[4] == "memory", int(rest[5]))
        print("BENCH_RESULT " + json.dumps(result), flush=True)
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict = {"cpu_threads": os.cpu_count(), "steps_per_run": args.steps, "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="doclife-bench-shards-") as tmp:
        root = Path(tmp)
        for n in sizes:
            started = time.perf_counter()
            snapshot = write_generated_snapshot(root / f"snap{n}", n)
            generated = round(time.perf_counter() - started, 1)
            tokenizer = root / f"tok{n}"
            tokenize = _child(["tokenize", str(snapshot), str(tokenizer)])
            print(n, "tokenize", tokenize, flush=True)
            first = _child(["pretrain", str(snapshot), str(tokenizer), str(root / f"pre{n}"), str(args.steps), "shards", "7"])
            print(n, "pretrain", first, flush=True)
            results["sizes"][str(n)] = {"generate_seconds": generated, "tokenize": tokenize, "pretrain": first}
            if n != sizes[0]:
                (snapshot / "corpus.parquet").unlink()  # the disk the largest corpus takes, back

        smallest = sizes[0]
        rounds: list[dict] = []
        for r in range(args.rounds):
            rates = {}
            # The order alternates too, so neither path always runs first in a round.
            for mode in ("shards", "memory") if r % 2 == 0 else ("memory", "shards"):
                out = root / f"rate{r}-{mode}"
                rates[mode] = _child(["pretrain", str(root / f"snap{smallest}"), str(root / f"tok{smallest}"), str(out),
                                      str(args.steps), mode, str(7 + r)])
            rounds.append(rates)
            print("round", r, rates, flush=True)

    small, large = results["sizes"][str(sizes[0])], results["sizes"][str(sizes[-1])]
    streamed = float(np.median([r["shards"]["tokens_per_s"] for r in rounds]))
    in_memory = float(np.median([r["memory"]["tokens_per_s"] for r in rounds]))
    results["streamed_vs_in_memory"] = {
        "snapshot_docs": smallest, "streamed_tokens_per_s": streamed, "in_memory_tokens_per_s": in_memory,
        "ratio": round(streamed / in_memory, 3),
        "ratio_per_round": [round(r["shards"]["tokens_per_s"] / r["memory"]["tokens_per_s"], 3) for r in rounds],
        "rounds": rounds,
    }
    results["ratios_largest_vs_smallest"] = {
        "docs": round(sizes[-1] / sizes[0], 1),
        "tokenize_wall": round(large["tokenize"]["wall_seconds"] / small["tokenize"]["wall_seconds"], 2),
        "tokenize_peak_rss": round(large["tokenize"]["peak_rss_gb"] / small["tokenize"]["peak_rss_gb"], 3),
        "pretrain_first_step": round(large["pretrain"]["first_step_seconds"] / small["pretrain"]["first_step_seconds"], 3),
        "pretrain_peak_rss": round(large["pretrain"]["peak_rss_gb"] / small["pretrain"]["peak_rss_gb"], 3),
    }
    save_result(args.name, results)
    print(json.dumps(results["ratios_largest_vs_smallest"]), json.dumps({k: v for k, v in results["streamed_vs_in_memory"].items() if k != "rounds"}))


if __name__ == "__main__":
    main()
