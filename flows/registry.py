"""The model registry: immutable versions, a `champion` alias and the history of every decision.

One directory: `versions/vNNNN/model/` holds each registered model (a Hugging Face export), and
`registry.json` holds the versions' records, the aliases and the history. Every change is a
read-modify-write of `registry.json` under a file lock, committed by an atomic rename, so a crash
leaves the old or the new state, and a version directory is complete before any record points at it.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from data_checks.io import atomic_dir, read_json, write_json

EMPTY = {"versions": [], "aliases": {"champion": None}, "history": []}


def model_digest(model_dir: Path) -> str:
    """sha256 over a model directory's file names and bytes: the identity of a model."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
        digest.update(path.relative_to(model_dir).as_posix().encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


class Registry:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.state_path = self.root / "registry.json"

    # reading
    def state(self) -> dict[str, Any]:
        if not self.state_path.exists():
            return copy.deepcopy(EMPTY)
        return read_json(self.state_path)

    def version(self, name: str) -> dict[str, Any]:
        for record in self.state()["versions"]:
            if record["version"] == name:
                return record
        raise KeyError(f"{self.state_path}: no version {name!r}")

    def champion(self) -> dict[str, Any] | None:
        name = self.state()["aliases"].get("champion")
        return self.version(name) if name else None

    def history(self) -> list[dict[str, Any]]:
        """Every decision, newest first."""
        return list(reversed(self.state()["history"]))

    # writing
    def register(self, model_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
        """Add the model as a new immutable version, or return the version that already holds it."""
        digest = model_digest(model_dir)
        with self._locked() as state:
            for existing in state["versions"]:
                if existing["model_sha256"] == digest:
                    return existing
            name = self._next_version_name(state)
            target = self.root / "versions" / name
            with atomic_dir(target) as tmp:
                shutil.copytree(model_dir, tmp / "model")
            entry = {"version": name, "path": str(target / "model"), "model_sha256": digest,
                     "registered_at": _now(), **record}
            state["versions"].append(entry)
            return entry

    def decide(self, version: str, promote: bool, reason: str, verdict: dict[str, Any] | None = None) -> dict[str, Any]:
        """Record a decision about `version`; when `promote`, it becomes the champion."""
        with self._locked() as state:
            before = state["aliases"].get("champion")
            if promote:
                state["aliases"]["champion"] = version
            event = {"time": _now(), "version": version, "decision": "promoted" if promote else "rejected",
                     "reason": reason, "champion_before": before, "champion_after": state["aliases"]["champion"]}
            if verdict is not None:
                event["verdict"] = verdict
            state["history"].append(event)
            return event

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Hold the registry lock while the block edits the state; write it back atomically if it succeeds."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self.state()
            yield state
            write_json(self.state_path, state)

    def _next_version_name(self, state: dict[str, Any]) -> str:
        # Count directories too: a crash after copying but before recording leaves one behind.
        taken = {r["version"] for r in state["versions"]}
        if (self.root / "versions").exists():
            taken |= {p.name for p in (self.root / "versions").iterdir() if p.name.startswith("v")}
        number = 1 + max((int(n[1:]) for n in taken if n[1:].isdigit()), default=0)
        return f"v{number:04d}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
