"""The promote stage: gather the evidence on one test snapshot, gate, record the decision, write the card.

Champion and challenger are scored on the same test documents of the same snapshot (its content hash is
checked against the evaluation's and recorded). Each version's per-document probabilities are cached in
the registry per snapshot hash; a champion without a cache entry for this snapshot is scored again here.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_checks.io import DoclifeError, atomic_path, read_json, write_json, write_parquet
from data_checks.snapshot import load_split, read_manifest
from flows.baselines import baseline_scores
from flows.gate import Evidence, decide
from flows.model_card import render_card
from flows.policy import METRIC_NAMES, PromoteConfig
from flows.registry import Registry, actor
from flows.scoring import bootstrap, metric, paired_improvement, resample_weights
from flows.serving import ServingResult, check_serving
from flows.slices import slice_table

# (model_dir, texts) -> (probs (n, C), labels): how a champion without cached scores is scored.
Scorer = Callable[[Path, list[str]], tuple[np.ndarray, list[str]]]
ServingCheck = Callable[..., ServingResult]


def _default_scorer(batch_size: int) -> Scorer:
    def score(model_dir: Path, texts: list[str]) -> tuple[np.ndarray, list[str]]:
        from lightning_modules.evaluate import predict_proba

        return predict_proba(model_dir, texts, batch_size)

    return score


def _challenger_probs(predictions_path: Path, test: pd.DataFrame) -> tuple[np.ndarray, list[str], pd.DataFrame]:
    """The evaluate stage's probabilities, aligned with the snapshot's test documents it scored."""
    if not predictions_path.is_file():
        raise DoclifeError(f"{predictions_path}: no predictions (run the evaluate stage first)")
    pred = pd.read_parquet(predictions_path)
    labels = [c[len("prob_"):] for c in pred.columns if c.startswith("prob_")]
    unknown = set(pred["doc_id"]) - set(test["doc_id"])
    if unknown or not labels:
        raise DoclifeError(f"{predictions_path}: {len(unknown)} documents are not in the snapshot's test split; "
                           "run the evaluate stage again")
    scored = test.set_index("doc_id").loc[pred["doc_id"]].reset_index()
    return pred[[f"prob_{label}" for label in labels]].to_numpy(dtype=np.float64), labels, scored


def _cached_probs(registry: Registry, version: str, sha: str, doc_ids: pd.Series, labels: list[str]) -> np.ndarray | None:
    path = registry.scores_path(version, sha)
    if not path.is_file():
        return None
    cached = pd.read_parquet(path).set_index("doc_id")
    if not set(doc_ids) <= set(cached.index) or any(f"prob_{label}" not in cached.columns for label in labels):
        return None
    return cached.loc[doc_ids, [f"prob_{label}" for label in labels]].to_numpy(dtype=np.float64)


def _cache_probs(registry: Registry, version: str, sha: str, doc_ids: pd.Series, probs: np.ndarray,
                 labels: list[str]) -> None:
    frame = pd.DataFrame({"doc_id": doc_ids.to_numpy()})
    for i, label in enumerate(labels):
        frame[f"prob_{label}"] = probs[:, i]
    write_parquet(registry.scores_path(version, sha), frame)


def _champion_probs(registry: Registry, champion: dict[str, Any], sha: str, scored: pd.DataFrame,
                    labels: list[str], scorer: Scorer) -> tuple[np.ndarray, bool]:
    """The champion's probabilities on these documents, and whether it had to be scored again now."""
    cached = _cached_probs(registry, champion["version"], sha, scored["doc_id"], labels)
    if cached is not None:
        return cached, False
    probs, its_labels = scorer(Path(champion["path"]), scored["text"].tolist())
    if sorted(its_labels) != sorted(labels):
        raise DoclifeError(f"{champion['path']}: the champion predicts labels {its_labels}, the challenger {labels}; "
                           "they cannot be compared (promote one by hand with --force)")
    probs = probs[:, [its_labels.index(label) for label in labels]]
    _cache_probs(registry, champion["version"], sha, scored["doc_id"], probs, labels)
    return probs, True


def promote(cfg: PromoteConfig, registry_dir: Path, metrics_path: Path, predictions_path: Path, model_dir: Path,
            snapshot_dir: Path, validation_summary: Path, verdict_path: Path, card_path: Path,
            params: dict[str, Any] | None = None, scorer: Scorer | None = None, batch_size: int = 128,
            serving_check: ServingCheck = check_serving, lineage: dict[str, Any] | None = None) -> dict[str, Any]:
    """Register the evaluated model as a version, gate it against the champion and record the verdict.

    `lineage` is what `doclife reproduce` needs to rebuild the version (flows/reproduce.py). Returns the
    verdict (also written to `verdict_path`, with the model card at `card_path`). One promotion at a time
    per registry: a second one (another clone sharing the registry) waits, then meets the first's champion.
    """
    with Registry(registry_dir).gate_lock():
        return _promote(cfg, registry_dir, metrics_path, predictions_path, model_dir, snapshot_dir,
                        validation_summary, verdict_path, card_path, params, scorer, batch_size, serving_check,
                        lineage)


def _promote(cfg: PromoteConfig, registry_dir: Path, metrics_path: Path, predictions_path: Path, model_dir: Path,
             snapshot_dir: Path, validation_summary: Path, verdict_path: Path, card_path: Path,
             params: dict[str, Any] | None, scorer: Scorer | None, batch_size: int, serving_check: ServingCheck,
             lineage: dict[str, Any] | None) -> dict[str, Any]:
    evaluated, manifest = read_json(metrics_path), read_manifest(snapshot_dir)
    sha = manifest["content_sha256"]
    if evaluated.get("content_sha256") != sha:
        raise DoclifeError(f"{metrics_path}: scored on snapshot {evaluated.get('snapshot')}, but {snapshot_dir} is "
                           f"{manifest['snapshot']}; run the evaluate stage again")
    probs, labels, scored = _challenger_probs(Path(predictions_path), load_split(snapshot_dir, "test"))
    target = scored["label"].map({label: i for i, label in enumerate(labels)}).to_numpy()

    registry = Registry(registry_dir)
    champion = registry.champion()
    challenger_metrics = {m: metric(m, target, probs) for m in METRIC_NAMES}
    entry = registry.register(model_dir, {
        "data_snapshot": manifest["snapshot"], "content_sha256": sha, "metrics": challenger_metrics,
        "baselines": evaluated.get("baselines", {}), "code_version": _code_version(Path(metrics_path).parent),
        "params": params or {}, "labels": labels, "lineage": lineage or {},
    })
    version = entry["version"]
    _cache_probs(registry, version, sha, scored["doc_id"], probs, labels)
    if champion is not None and champion.get("labels") and sorted(champion["labels"]) != sorted(labels):
        raise DoclifeError(
            f"{registry.state_path}: the champion {champion['version']} predicts labels [{', '.join(champion['labels'])}], "
            f"{version} predicts [{', '.join(labels)}]; a model for another label set belongs in a workspace of its own "
            f"(doclife init), or make it the champion with `doclife promote {version} --force --reason ...`")

    policy = cfg.digest()
    earlier = registry.last_decision(version, sha, policy)
    if earlier is not None:  # a re-run (e.g. after a crash) repeats the recorded verdict, deciding nothing anew
        return _write(verdict_path, card_path, registry, earlier["verdict"])
    if champion is not None and champion["version"] == version:
        return _write(verdict_path, card_path, registry, {"version": version, "decision": "unchanged", "promoted": 0,
                                     "reason": f"{version} is already the champion", "policy": policy,
                                     "data_snapshot": manifest["snapshot"], "content_sha256": sha,
                                     "champion_before": version, "champion_after": version, "checks": []})

    weights = resample_weights(len(target), cfg.bootstrap.resamples, cfg.bootstrap.seed)
    confidence = cfg.bootstrap.confidence
    # AUC per resample is a Python loop; its interval is computed only when it decides.
    interval_metrics = [m for m in METRIC_NAMES if m != "roc_auc" or cfg.primary_metric == "roc_auc"]
    intervals = {m: bootstrap(m, target, probs, weights, confidence).as_list() for m in interval_metrics}

    champion_metrics = improvement = champion_probs = None
    rescored = False
    if champion is not None:
        champion_probs, rescored = _champion_probs(registry, champion, sha, scored, labels,
                                                   scorer or _default_scorer(batch_size))
        champion_metrics = {m: metric(m, target, champion_probs) for m in METRIC_NAMES}
        improvement = paired_improvement(cfg.primary_metric, target, probs, champion_probs, weights, confidence,
                                         cfg.direction(cfg.primary_metric))

    train = load_split(snapshot_dir, "train")
    baselines = baseline_scores(train, scored, target, labels, cfg.baselines, METRIC_NAMES)
    slices = slice_table(scored, target, probs, champion_probs, cfg.slices)
    sample = scored.sample(n=min(cfg.serving.sample_size, len(scored)), random_state=cfg.bootstrap.seed)
    expected = [labels[i] for i in probs[sample.index.to_numpy()].argmax(axis=1)]
    serving = serving_check(Path(entry["path"]), sample["text"].tolist(), expected, cfg.serving)
    validation = read_json(validation_summary) if Path(validation_summary).is_file() else None

    evidence = Evidence(challenger_metrics, champion_metrics, improvement, slices, baselines, validation, serving)
    verdict = decide(evidence, cfg, champion["version"] if champion else None)
    result = {
        "version": version,
        "decision": "promoted" if verdict.promote else "rejected",
        "promoted": int(verdict.promote),
        "reason": verdict.reason,
        "policy": policy,
        "data_snapshot": manifest["snapshot"],
        "content_sha256": sha,
        "n_test": int(len(target)),
        "confidence": confidence,
        "champion_before": champion["version"] if champion else None,
        "champion_after": version if verdict.promote else (champion["version"] if champion else None),
        "champion_rescored": rescored,
        "challenger": challenger_metrics,
        "intervals": intervals,
        "champion_scores": champion_metrics,
        "improvement": None if improvement is None else {
            "metric": cfg.primary_metric, "observed": improvement.observed, "interval": improvement.as_list()},
        "baselines": baselines,
        "slices": slices,
        "serving": asdict(serving),
        "n_failed": len(verdict.failed()),
        "checks": [asdict(c) for c in verdict.checks],
        "actor": actor(),
    }
    # The card is written before the decision is recorded: a crash in between re-runs the gate, never
    # leaves a recorded decision without its card.
    card = render_card(entry, result)
    with atomic_path(registry.card_path(version)) as tmp:
        tmp.write_text(card, encoding="utf-8")
    registry.decide(version, verdict.promote, verdict.reason, result)
    return _write(verdict_path, card_path, registry, result)


def _write(verdict_path: Path, card_path: Path, registry: Registry, result: dict[str, Any]) -> dict[str, Any]:
    """Publish the verdict and the version's model card as this stage's outputs."""
    card = registry.card_path(result["version"])
    with atomic_path(card_path) as tmp:
        tmp.write_text(card.read_text(encoding="utf-8") if card.is_file() else
                       f"# Model card: {result['version']}\n\n{result['reason']}\n", encoding="utf-8")
    write_json(verdict_path, result)
    return result


def champion_status(registry_dir: Path) -> dict[str, Any]:
    """What `doclife status --json` prints: the champion's version, path, data snapshot, metrics and baselines."""
    registry = Registry(registry_dir)
    champion = registry.champion()
    if champion is None:
        return {"champion": None}
    keys = ("version", "path", "data_snapshot", "metrics", "baselines", "registered_at", "code_version")
    status: dict[str, Any] = {"champion": {key: champion.get(key) for key in keys}}
    # The gate's latest verdict on the champion carries the TF-IDF baseline and the intervals.
    for event in registry.history():
        if event["version"] == champion["version"] and event.get("verdict"):
            recorded, gated = champion.get("baselines") or {}, event["verdict"].get("baselines") or {}
            status["champion"]["baselines"] = {name: {**recorded.get(name, {}), **gated.get(name, {})}
                                               for name in {**recorded, **gated}}
            status["champion"]["intervals"] = event["verdict"].get("intervals")
            break
    status["challenger"] = registry.state()["aliases"].get("challenger")
    return status


def _code_version(cwd: Path) -> str | None:
    """The git commit of the workspace, with `+dirty` when it has uncommitted changes; None outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("+dirty" if dirty else "")
