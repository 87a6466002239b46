"""The promote stage: score champion and challenger on the same test snapshot, gate, record the decision."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

from data_checks.io import read_json, write_json
from flows.config import METRIC_NAMES, PromoteConfig
from flows.gate import decide
from flows.registry import Registry
from lightning_modules.config import EvaluateConfig
from lightning_modules.evaluate import evaluate


def promote(cfg: PromoteConfig, eval_cfg: EvaluateConfig, registry_dir: Path, metrics_path: Path,
            model_dir: Path, snapshot_dir: Path, verdict_path: Path) -> dict[str, Any]:
    """Register the evaluated model as a version and promote it if it passes the gate; return the verdict."""
    challenger = read_json(metrics_path)
    registry = Registry(registry_dir)
    champion = registry.champion()
    entry = registry.register(model_dir, {
        "data_snapshot": challenger["snapshot"],
        "content_sha256": challenger["content_sha256"],
        "metrics": {name: challenger[name] for name in METRIC_NAMES},
        "baselines": challenger["baselines"],
        "code_version": _code_version(metrics_path.parent),
    })

    champion_scores, rescored = None, False
    if champion is not None:
        champion_scores = champion["metrics"]
        if champion["content_sha256"] != challenger["content_sha256"]:
            # The champion's recorded scores came from another snapshot: score it again on this one.
            champion_scores, rescored = _score(eval_cfg, snapshot_dir, Path(champion["path"])), True

    if champion is not None and champion["version"] == entry["version"]:
        verdict_dict = {"promote": False, "reason": f"{entry['version']} is already the champion", "checks": []}
        event = {"champion_before": champion["version"], "champion_after": champion["version"]}
    else:
        verdict = decide(challenger, champion_scores, cfg)
        verdict_dict = verdict.to_dict()
        event = registry.decide(entry["version"], verdict.promote, verdict.reason, verdict_dict)

    result = {
        "version": entry["version"],
        "promoted": int(verdict_dict["promote"]),
        "reason": verdict_dict["reason"],
        "data_snapshot": challenger["snapshot"],
        "challenger": {name: challenger[name] for name in METRIC_NAMES},
        "champion_before": event["champion_before"],
        "champion_after": event["champion_after"],
        "champion_scores": champion_scores,
        "champion_rescored": rescored,
        "checks": verdict_dict["checks"],
    }
    write_json(verdict_path, result)
    return result


def champion_status(registry_dir: Path) -> dict[str, Any]:
    """What `doclife status --json` prints: the champion's version, path, data snapshot, metrics and baselines."""
    champion = Registry(registry_dir).champion()
    if champion is None:
        return {"champion": None}
    keys = ("version", "path", "data_snapshot", "metrics", "baselines", "registered_at", "code_version")
    return {"champion": {key: champion.get(key) for key in keys}}


def _score(eval_cfg: EvaluateConfig, snapshot_dir: Path, model_dir: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="doclife-rescore-") as tmp:
        out = Path(tmp)
        metrics = evaluate(eval_cfg, snapshot_dir, model_dir, out / "metrics.json", out / "predictions.parquet",
                           out / "confusion.csv", out / "confusion.png")
    return {name: metrics[name] for name in METRIC_NAMES}


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
