"""The model registry: immutable versions, the aliases `champion` and `challenger`, and the history of every
decision, with who made it, when and why.

The data model is MLflow's Model Registry (numbered immutable versions, movable aliases, tags) kept in
one directory, because the alternatives need what a pipeline stage cannot give: MLflow's SQL registry does
not keep alias history (mlflow#2169) and GTO needs a git commit per version (see README, "Gate and registry").
`versions/vNNNN/model/` holds each registered model (a Hugging Face export); `registry.json` holds the
versions' records, the aliases and the append-only history, with paths relative to the registry. The
directory can be shared by a team (a path every machine mounts, beside the DVC remote's data): writes and
whole promotions are serialised by locks in it. Every change is a read-modify-write of
`registry.json` under a file lock, committed by one atomic rename, so a crash (kill -9 included) leaves the
old or the new state, and a version directory is complete before any record points at it.
`scores/` caches each version's test-set probabilities per snapshot content hash; `cards/` its model card.
"""

from __future__ import annotations

import copy
import fcntl
import getpass
import hashlib
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from data_checks.io import DoclifeError, atomic_dir, read_json, write_json

EMPTY = {"versions": [], "aliases": {"champion": None, "challenger": None}, "history": []}
# Decisions that put a version in the champion seat, and the one that takes the previous one back.
SEATING = ("promoted", "forced")


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
        """The record of version `name`, with `path` where its model is in this registry now (records hold
        no absolute path: the registry and the workspace can move)."""
        for record in self.state()["versions"]:
            if record["version"] == name:
                return {**record, "path": str(self.model_path(name))}
        raise DoclifeError(f"{self.state_path}: no version {name!r}")

    def model_path(self, name: str) -> Path:
        return self.root / "versions" / name / "model"

    def champion(self) -> dict[str, Any] | None:
        name = self.state()["aliases"].get("champion")
        return self.version(name) if name else None

    def resolve(self, ref: str) -> dict[str, Any]:
        """The version an alias (`champion`, `challenger`) points at, or the version named `ref`."""
        aliases = self.state()["aliases"]
        if ref in aliases:
            if aliases[ref] is None:
                raise DoclifeError(f"{self.state_path}: no {ref} yet (run the lifecycle to register and promote one)")
            ref = aliases[ref]
        return self.version(ref)

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
                    return {**existing, "path": str(self.model_path(existing["version"]))}
            name = self._next_version_name(state)
            with atomic_dir(self.model_path(name).parent) as tmp:
                shutil.copytree(model_dir, tmp / "model")
            entry = {"version": name, "path": f"versions/{name}/model", "model_sha256": digest,
                     "registered_at": _now(), **record}
            state["versions"].append(entry)
            return {**entry, "path": str(self.model_path(name))}

    def record(self, version: str, decision: str, reason: str, verdict: dict[str, Any] | None = None,
               aliases: dict[str, str | None] | None = None) -> dict[str, Any]:
        """Append a decision about `version` and set `aliases` (name → version or None), in one atomic write."""
        with self._locked() as state:
            names = {r["version"] for r in state["versions"]}
            for name in (version, *(aliases or {}).values()):
                if name is not None and name not in names:
                    raise DoclifeError(f"{self.state_path}: no version {name!r}")
            current = state.setdefault("aliases", {"champion": None})
            before = current.get("champion")
            current.update(aliases or {})
            event = {"time": _now(), "version": version, "decision": decision, "reason": reason,
                     "actor": actor(), "champion_before": before, "champion_after": current.get("champion")}
            if verdict is not None:
                event["verdict"] = verdict
            state["history"].append(event)
            return event

    def decide(self, version: str, promote: bool, reason: str, verdict: dict[str, Any] | None = None) -> dict[str, Any]:
        """Record the gate's decision about `version`: promoted, it is the champion; refused, it stays the
        challenger (the last version the gate turned down) until the next decision."""
        aliases = {"champion": version, "challenger": None} if promote else {"challenger": version}
        return self.record(version, "promoted" if promote else "rejected", reason, verdict, aliases)

    def force(self, version: str, reason: str) -> dict[str, Any]:
        """A person makes `version` the champion, bypassing the gate; recorded as `forced` with the reason."""
        if not reason.strip():
            raise DoclifeError("promote --force needs --reason: the history records why the gate was bypassed")
        self.version(version)
        return self.record(version, "forced", reason, aliases={"champion": version})

    def previous_champion(self) -> str | None:
        """The champion before the current one, replaying the history: promotions and forced promotions
        push onto a stack, rollbacks pop; so two rollbacks in a row go two champions back."""
        seats: list[str] = []
        for event in self.state()["history"]:
            if event["decision"] in SEATING and event["champion_after"] != event["champion_before"]:
                seats.append(event["champion_after"])
            elif event["decision"] == "rollback" and seats:
                seats.pop()
        return seats[-2] if len(seats) >= 2 else None

    def rollback(self, reason: str = "") -> dict[str, Any]:
        """Give the champion alias back to the previous champion, recorded as `rollback`."""
        current, previous = self.state()["aliases"].get("champion"), self.previous_champion()
        if previous is None:
            raise DoclifeError(f"{self.state_path}: no previous champion to roll back to (champion: {current})")
        return self.record(previous, "rollback", reason or f"rollback from {current} to {previous}",
                           aliases={"champion": previous})

    def last_decision(self, version: str, content_sha256: str, policy: str) -> dict[str, Any] | None:
        """The gate's decision about `version` on this snapshot under this policy, if it still stands: the
        champion is the one it was judged against, or the one it made."""
        champion = self.state()["aliases"].get("champion")
        for event in reversed(self.state()["history"]):
            verdict = event.get("verdict") or {}
            if (event["version"] == version and event["decision"] in ("promoted", "rejected")
                    and verdict.get("content_sha256") == content_sha256 and verdict.get("policy") == policy):
                return event if champion in (event["champion_before"], event["champion_after"]) else None
        return None

    def scores_path(self, version: str, content_sha256: str) -> Path:
        """Where a version's per-document test probabilities on one snapshot are cached."""
        return self.root / "scores" / f"{version}-{content_sha256[:16]}.parquet"

    def card_path(self, version: str) -> Path:
        return self.root / "cards" / f"{version}.md"

    @contextmanager
    def gate_lock(self) -> Iterator[None]:
        """Serialise whole promotions, from reading the champion to recording the decision: two workspaces
        sharing this registry (clones on two machines) promoting at once judge the second challenger
        against the first's outcome. An flock, released by the kernel if its holder dies."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".gate.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

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


def actor() -> str:
    """Who made a decision: $DOCLIFE_ACTOR (set by a scheduler or CI), else user@host."""
    if os.environ.get("DOCLIFE_ACTOR"):
        return os.environ["DOCLIFE_ACTOR"]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. in some containers
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
