"""Rebuilding a registered version from its record: `doclife reproduce VERSION`.

At promotion every version records its lineage: the DVC hashes of its snapshot and tokenizer (from
`dvc.lock`), every stage's parameters, the versions of doclife, torch, Lightning and transformers, and the
checkpoint pretraining started from (pretrain.init_from: its origin and sha256; rebuilt from the very same).
`reproduce` makes a scratch workspace that shares the workspace's DVC cache and remote, checks out the
snapshot and tokenizer by those hashes (fetching them from the remote when the cache lacks them), runs
pretrain → finetune → evaluate there with the recorded parameters, and compares the rebuilt model's test
predictions with the ones registered for the version.
"""

from __future__ import annotations

import dataclasses
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import yaml

from data_checks.io import DoclifeError, read_json
from flows.config import Params
from flows.dvc import dvc_checked, dvc_env
from flows.layout import Layout
from flows.registry import Registry, model_digest
from lightning_modules.checkpoint import CHAMPION

PACKAGES = ("doclife", "torch", "pytorch-lightning", "transformers", "tokenizers", "dvc")
REBUILT_STAGES = ("pretrain", "finetune", "evaluate")


def software_versions() -> dict[str, str | None]:
    def one(name: str) -> str | None:
        try:
            return installed_version(name)
        except PackageNotFoundError:
            return None

    return {"python": platform.python_version(), **{name: one(name) for name in PACKAGES}}


def locked_hash(root: Path, stage: str, path: str) -> str | None:
    """The md5 DVC recorded in `dvc.lock` for output `path` of `stage`; None without a lock entry."""
    lock = Path(root) / "dvc.lock"
    if not lock.is_file():
        return None
    outs = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {}).get(stage, {}).get("outs", [])
    return next((out.get("md5") for out in outs if out.get("path") == path), None)


def lineage(at: Layout, params: Params) -> dict[str, Any]:
    """What a version needs to be rebuilt: its inputs' DVC hashes, every stage's parameters, the software, and
    the checkpoint pretraining started from ({origin, sha256} from the pretrain metrics; None: from scratch)."""
    pretrained = at.metrics("pretrain")
    return {
        "snapshot_md5": locked_hash(at.root, "snapshot", _rel(at, at.snapshot)),
        "tokenizer_md5": locked_hash(at.root, "tokenize", _rel(at, at.tokenizer)),
        "params": stage_params(params),
        "software": software_versions(),
        "base_checkpoint": read_json(pretrained).get("base_checkpoint") if pretrained.is_file() else None,
    }


def pinned_params(at: Layout, registry: Registry, version: str, record: dict[str, Any]) -> dict[str, Any]:
    """The recorded parameters with pretrain.init_from pinned to the very checkpoint `version` started from:
    `champion` means another model once the champion has moved on, and the scratch workspace has no registry."""
    params = record["params"]
    base = record.get("base_checkpoint")
    if not (params.get("pretrain") or {}).get("init_from") or not base:
        return params
    origin = base["origin"]
    champion = origin.removeprefix(f"{CHAMPION} ")
    path = registry.model_path(champion) if champion != origin else at.root / origin
    found = model_digest(path) if path.is_dir() else None
    if found != base["sha256"]:
        raise DoclifeError(f"{path}: the checkpoint {version} was trained from ({origin}, sha256 "
                           f"{base['sha256'][:16]}…) is {'gone' if found is None else 'changed'}; it cannot be rebuilt")
    return {**params, "pretrain": {**params["pretrain"], "init_from": str(path)}}


def stage_params(params: Params) -> dict[str, Any]:
    """Every stage's section of params.yaml (the schedule is no stage's)."""
    return {name: value for name, value in dataclasses.asdict(params).items() if name != "schedule"}


def reproduce(at: Layout, registry: Registry, version: str, workdir: Path | None = None) -> dict[str, Any]:
    """Rebuild `version` in a scratch workspace and compare its test predictions with the registered ones."""
    import numpy as np
    import pandas as pd

    from data_checks.snapshot import load_split
    from flows.policy import METRIC_NAMES
    from flows.scoring import metric

    entry = registry.version(version)
    record = entry.get("lineage") or {}
    missing = [key for key in ("snapshot_md5", "tokenizer_md5", "params") if not record.get(key)]
    if missing:
        raise DoclifeError(f"{registry.state_path}: {version} was registered without {', '.join(missing)} "
                           "(promoted outside `dvc repro` or `doclife run`); it cannot be rebuilt")
    registered = registry.scores_path(version, entry["content_sha256"])
    if not registered.is_file():
        raise DoclifeError(f"{registered}: the registered test predictions of {version} are missing")

    params = pinned_params(at, registry, version, record)
    started = time.perf_counter()
    scratch = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"doclife-reproduce-{version}-"))
    try:
        ws = Layout(scratch)
        _scratch_workspace(at, ws, record, params)
        for stage in REBUILT_STAGES:
            _run_stage(ws, stage)
        rebuilt = pd.read_parquet(ws.predictions).set_index("doc_id")
        before = pd.read_parquet(registered).set_index("doc_id")
        labels = entry["labels"]
        columns = [f"prob_{label}" for label in labels]
        if set(rebuilt.index) != set(before.index) or not set(columns) <= set(rebuilt.columns):
            raise DoclifeError(f"{ws.predictions}: the rebuilt model scored other documents or labels than {version}")
        now, then = rebuilt.loc[before.index, columns].to_numpy(), before[columns].to_numpy()
        test = load_split(ws.snapshot, "test").set_index("doc_id").loc[before.index]
        target = test["label"].map({label: i for i, label in enumerate(labels)}).to_numpy()
        differing = int((now.argmax(axis=1) != then.argmax(axis=1)).sum())
        result = {
            "version": version,
            "identical": differing == 0,
            "predictions": int(len(before)),
            "predictions_differing": differing,
            "max_probability_difference": float(np.abs(now - then).max()),
            "metrics": {m: metric(m, target, now) for m in METRIC_NAMES},
            "registered_metrics": entry.get("metrics", {}),
            "software": {"registered": record.get("software", {}), "now": software_versions()},
            "seconds": round(time.perf_counter() - started, 1),
        }
        if workdir:
            result["workdir"] = str(scratch)
        return result
    finally:
        if not workdir:
            shutil.rmtree(scratch, ignore_errors=True)


def _scratch_workspace(at: Layout, ws: Layout, record: dict[str, Any], params: dict[str, Any]) -> None:
    """A DVC repository with the recorded `params` (params.yaml), sharing the workspace's cache and remote,
    holding the recorded snapshot and tokenizer."""
    from dvc.repo import Repo

    ws.root.mkdir(parents=True, exist_ok=True)
    (ws.params).write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True), encoding="utf-8")
    config = Repo(str(at.root)).config  # remote URLs come back absolute
    dvc_checked(ws.root, ["init", "--no-scm", "-q"])
    dvc_checked(ws.root, ["config", "cache.dir", str(at.root / ".dvc" / "cache")])
    for name, remote in config.get("remote", {}).items():
        dvc_checked(ws.root, ["remote", "add", name, remote["url"]])
    if config["core"].get("remote"):
        dvc_checked(ws.root, ["remote", "default", config["core"]["remote"]])
    for out, md5 in ((ws.snapshot, record["snapshot_md5"]), (ws.tokenizer, record["tokenizer_md5"])):
        pointer = out.with_name(out.name + ".dvc")
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.write_text(yaml.safe_dump({"outs": [{"md5": md5, "hash": "md5", "path": out.name}]}), encoding="utf-8")
        try:
            dvc_checked(ws.root, ["pull", str(pointer.relative_to(ws.root))])
        except DoclifeError as exc:
            raise DoclifeError(f"{_rel(ws, out)} {md5}: in neither the DVC cache nor the remote ({exc}); "
                               "`dvc push` from the workspace that made it") from None


def _run_stage(ws: Layout, stage: str) -> None:
    """One stage's command, as `dvc repro` runs it, in the scratch workspace."""
    proc = subprocess.run([sys.executable, "-m", "flows.cli", stage], cwd=ws.root, env=dvc_env(),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        raise DoclifeError(f"reproducing {stage} in {ws.root}: {lines[-1]}")


def _rel(at: Layout, path: Path) -> str:
    return path.relative_to(at.root).as_posix()
