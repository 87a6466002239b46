"""The data stages at scale: ingest → clean → validate → snapshot on generated corpora stored as many compressed
shards, each stage in a process of its own, so its wall time and peak RSS are its own.

For each size, the sample generator's corpus (four topics, Chinese and English, its planted defects) is
written as files of 100,000 documents, alternating gzip CSV and zstd JSONL; `doclife init` makes a workspace
whose `ingest.source` is that directory, and the stages run as `doclife STAGE` does in it. The first and the last
size are compared stage by stage: peak RSS and seconds per document. On the first size, a second workspace
runs every stage with `engine.mode: ray` on a Ray started on this machine (`ray start --head`, as many CPUs as
the machine has): whether it writes the same snapshot, quarantine and findings, and its wall time against
local mode's. Then a new file of 5% new documents lands and every stage runs again, reading back from the
workspace's engine.reuse store what the full run computed for the old files and batches: its cost against the
full run, and how many snapshot shards changed. Last, every stage on documents of about 2 kB (each 20 generated
documents, one per line), whose per-character work sets the rate of long-document corpora. Writes
bench/results/data_scale.json.

    python -m bench.data_scale [--sizes 1000000,10000000] [--no-ray] [--long-docs 1000000]
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

from bench.common import peak_rss_gb, save_result

REPO = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "clean", "validate", "snapshot")


def write_shards(out: Path, n_docs: int, shards: int, seed: int = 11) -> float:
    """The generated corpus of `n_docs` as `shards` compressed files in `out`, each generated on its own (its
    own seed, 10 planted defects of each kind), so a corpus of any size is written in the memory of one shard;
    returns their size in MB."""
    import pyarrow as pa

    from data_checks.config import SampleConfig
    from data_checks.sample_corpus import generate_sample_corpus

    out.mkdir(parents=True)
    for i in range(shards):
        size = n_docs // shards + (i < n_docs % shards)
        rows = generate_sample_corpus(SampleConfig(n_docs=size, seed=seed + i, defects_per_kind=10))
        if i % 2 == 0:
            rows.to_csv(out / f"part-{i:04d}.csv.gz", index=False)
        else:
            with pa.output_stream(str(out / f"part-{i:04d}.jsonl.zst"), compression="zstd") as stream:
                stream.write(rows.to_json(orient="records", lines=True, force_ascii=False).encode("utf-8"))
    return sum(p.stat().st_size for p in out.iterdir()) / 1e6


LONG_PARTS = 20  # generated documents a long one joins, one per line: about 2 kB of UTF-8 (1,500 characters)


def write_long_shards(out: Path, n_docs: int, shards: int, seed: int = 21) -> float:
    """`n_docs` documents of about 2 kB as `shards` gzip CSV files: each joins LONG_PARTS generated documents of
    one topic, one per line (no planted defects); returns their size in MB."""
    import numpy as np
    import pandas as pd

    from data_checks.config import SampleConfig
    from data_checks.sample_corpus import generate_sample_corpus

    out.mkdir(parents=True)
    for i in range(shards):
        size = n_docs // shards + (i < n_docs % shards)
        short = generate_sample_corpus(SampleConfig(n_docs=size * LONG_PARTS, seed=seed + i, defects_per_kind=0))
        rows = pd.concat([pd.DataFrame({"text": texts.groupby(np.arange(len(texts)) // LONG_PARTS).agg("\n".join),
                                        "label": label})
                          for label, texts in short.dropna().groupby("label")["text"]], ignore_index=True)
        rows.to_csv(out / f"part-{i:04d}.csv.gz", index=False)
    return sum(p.stat().st_size for p in out.iterdir()) / 1e6


def _child(args: list[str], cwd: Path) -> dict:
    """`python -m bench.data_scale --child ...` in `cwd`: what the command measured of itself."""
    done = subprocess.run([sys.executable, "-m", "bench.data_scale", "--child", *args], cwd=cwd, capture_output=True,
                          text=True, env=os.environ | {"PYTHONPATH": str(REPO)})
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit((done.stdout + done.stderr)[-3000:])
    return json.loads(lines[-1].removeprefix("BENCH_RESULT "))


def child(args: list[str]) -> None:
    """Run one doclife command in this process, then print its wall time and this process's peak RSS."""
    from flows.cli import main

    started = time.perf_counter()
    code = main(args)
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"doclife {' '.join(args)} exited {code}")
    print("BENCH_RESULT " + json.dumps({"seconds": round(seconds, 2), "peak_rss_gb": peak_rss_gb()}), flush=True)


def one_size(root: Path, n_docs: int, long: bool = False) -> dict:
    """Every stage on `n_docs` generated documents: short ones in files of 100,000, or (`long`) ~2 kB ones in
    files of 10,000."""
    kind = "long_" if long else ""
    source = root / f"shards_{kind}{n_docs}"
    shards = max(1, n_docs // (10_000 if long else 100_000))
    started = time.perf_counter()
    mb = (write_long_shards if long else write_shards)(source, n_docs, shards)
    print(f"{n_docs:,} {'~2 kB ' if long else ''}documents as {shards} shards ({mb:.0f} MB) in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    ws = root / f"ws_{kind}{n_docs}"
    steps = {"init": _child(["init", str(ws), "--source", str(source), "--text-column", "text", "--label-column",
                             "label"], root)}
    stages = list(STAGES)
    for stage in stages:
        steps[stage] = _child([stage], ws)
        print(f"  {stage:<9}{steps[stage]['seconds']:>9.1f} s {steps[stage]['peak_rss_gb']:>7.2f} GB", flush=True)
    run = {"documents": n_docs, "shards": shards, "source_mb": round(mb, 1), "steps": steps,
           "stages": stages, "seconds": round(sum(steps[s]["seconds"] for s in stages), 1),
           "peak_rss_gb": max(steps[s]["peak_rss_gb"] for s in stages)}
    summary = json.loads((ws / "reports/validate/summary.json").read_text())
    return run | {"validated": summary["validated"], "quarantined": summary["quarantined"]}


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def ray_against_local(root: Path, run: dict) -> dict:
    """The first size's stages again in a workspace whose engine.mode is ray, on a Ray cluster of this machine."""
    import yaml

    n_docs = run["documents"]
    source, local, ws = root / f"shards_{n_docs}", root / f"ws_{n_docs}", root / f"ws_{n_docs}_ray"
    _child(["init", str(ws), "--source", str(source), "--text-column", "text", "--label-column", "label"], root)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["engine"] |= {"mode": "ray", "ray_address": "auto"}
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ray = Path(sys.executable).parent / "ray"
    subprocess.run([ray, "start", "--head", f"--num-cpus={os.cpu_count()}", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, capture_output=True)
    try:
        steps = {stage: _child([stage], ws) for stage in run["stages"]}
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True)
    seconds = round(sum(step["seconds"] for step in steps.values()), 1)
    same = {name: _sha256(local / path) == _sha256(ws / path) for name, path in
            (("quarantine", "data/quarantine.parquet"), ("findings", "reports/validate/findings.parquet"),
             ("validated", "data/validated.parquet"))}
    manifests = [json.loads((w / "data/snapshot/manifest.json").read_text()) for w in (local, ws)]
    same["snapshot"] = manifests[0]["content_sha256"] == manifests[1]["content_sha256"]
    for stage in run["stages"]:
        print(f"  ray {stage:<9}{steps[stage]['seconds']:>5.1f} s (local {run['steps'][stage]['seconds']:.1f} s)", flush=True)
    print(f"  engine ray: {seconds:.1f} s against {run['seconds']:.1f} s local; identical files: {same}", flush=True)
    return {"cpus": os.cpu_count(), "steps": steps, "seconds": seconds,
            "seconds_ratio": round(seconds / run["seconds"], 3), "identical": same,
            "snapshot": manifests[1]["snapshot"]}


def _shard_digests(ws: Path) -> dict[str, str]:
    return {p.name: _sha256(p) for p in (ws / "data/snapshot/corpus.parquet").iterdir()}


def new_week(root: Path, run: dict) -> dict:
    """One new file of 5% new documents lands in the first size's source: every stage again, what it costs
    against the full run, and how many snapshot shards change (what DVC stores anew)."""
    n_docs = run["documents"]
    source, ws = root / f"shards_{n_docs}", root / f"ws_{n_docs}"
    before = _shard_digests(ws)
    write_shards(source / "week-2", n_docs // 20, 1, seed=1_000)
    steps = {stage: _child([stage], ws) for stage in run["stages"]}
    after = _shard_digests(ws)
    seconds = round(sum(step["seconds"] for step in steps.values()), 1)
    changed = sum(after.get(name) != digest for name, digest in before.items()) + len(set(after) - set(before))
    print(f"  + 5% new documents: {seconds:.1f} s against {run['seconds']:.1f} s; {changed} of {len(after)} snapshot "
          "shards changed", flush=True)
    return {"new_documents": n_docs // 20, "steps": steps, "seconds": seconds,
            "seconds_ratio": round(seconds / run["seconds"], 3), "snapshot_shards": len(after),
            "snapshot_shards_changed": changed}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated corpus sizes")
    parser.add_argument("--name", default="data_scale", help="result file: bench/results/NAME.json")
    parser.add_argument("--no-ray", action="store_true", help="skip the engine.mode ray run")
    parser.add_argument("--long-docs", type=int, default=1_000_000, help="documents of ~2 kB (0: none)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="doclife-data-scale-") as tmp:
        runs = [one_size(Path(tmp), sizes[0])]
        ray = None if args.no_ray else ray_against_local(Path(tmp), runs[0])
        week = new_week(Path(tmp), runs[0])
        runs += [one_size(Path(tmp), n) for n in sizes[1:]]
        long = one_size(Path(tmp), args.long_docs, long=True) if args.long_docs else None
    result: dict = {"runs": runs, "ray": ray, "new_week": week, "long_docs": long, "device": f"{os.cpu_count()} cores"}
    if len(runs) > 1:
        small, large = runs[0], runs[-1]
        scale = large["documents"] / small["documents"]
        # Per stage measured at both sizes: how much more memory, and how much more time per document.
        result["growth"] = {stage: {
            "rss_ratio": round(large["steps"][stage]["peak_rss_gb"] / small["steps"][stage]["peak_rss_gb"], 3),
            "seconds_per_doc_ratio": round(large["steps"][stage]["seconds"] / small["steps"][stage]["seconds"] / scale, 3),
        } for stage in large["stages"] if stage in small["stages"]}
    save_result(args.name, result)
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    else:
        main()
