"""Running DVC stages from Python through DVC's CLI (DVC has no stable Python API for repro/push)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from data_checks.io import DoclifeError


class StageFailed(DoclifeError):
    """A DVC stage exited non-zero; the message is the stage's own one-line error."""


@dataclass(frozen=True)
class StageRun:
    stage: str
    ran: bool
    """False when DVC found the stage's deps, params and code unchanged and skipped it."""
    seconds: float


def dvc_env() -> dict[str, str]:
    """The environment for DVC and the `doclife` commands it runs: this interpreter's bin directory first."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def run_dvc(root: Path, args: list[str], log: Callable[[str], None] = print) -> tuple[int, list[str]]:
    """Run `dvc ARGS` in `root`, passing each output line to `log` as it comes; return the exit code and lines.

    The command and everything it starts (the stage's `doclife` process, ddp's ranks) form one process
    group that belongs to this call: if the caller is interrupted (an exception in `log`, Ctrl-C, SIGTERM
    from the Prefect runner), the group is stopped before the exception leaves, so a retried task never
    meets the previous attempt's training still running.
    """
    # --wait-for-lock: a hand-run `dvc repro` holding DVC's repository lock makes us wait, not fail.
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "--wait-for-lock", *args], cwd=root, env=dvc_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True)
    lines: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            log(line)
        return proc.wait(), lines
    except BaseException:
        stop_process_group(proc)
        raise


def stop_process_group(proc: subprocess.Popen, grace_seconds: float = 30) -> None:
    """SIGTERM the process group led by `proc` (Lightning saves a checkpoint on the way out), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace_seconds)
            # The leader is gone; its children may not be: one last sweep of the group.
            os.killpg(proc.pid, signal.SIGKILL)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


# DVC's closing advice after a repro (git add dvc.lock, autostage, dvc push) is for a person at a shell; in a
# flow it would repeat under every stage, and the flow pushes the snapshot itself.
SHELL_ADVICE = ("To track the changes with git, run:", "\tgit add ", "To enable auto staging, run:",
                "\tdvc config core.autostage true", "Use `dvc push` to send your updates to remote storage.")


def is_shell_advice(line: str) -> bool:
    return not line.strip() or line.startswith(SHELL_ADVICE)


def repro_stage(root: Path, stage: str, log: Callable[[str], None] = print) -> StageRun:
    """`dvc repro --single-item STAGE`: run the stage if its deps, params or code changed, else skip it.

    `log` gets every output line but DVC's shell advice and blank lines.
    """
    start = time.perf_counter()
    code, lines = run_dvc(root, ["repro", "--single-item", stage],
                          lambda line: None if is_shell_advice(line) else log(line))
    if code != 0:
        raise StageFailed(f"stage {stage!r} failed: {stage_error(lines)}")
    ran = any(line.startswith(f"Running stage '{stage}'") for line in lines)
    return StageRun(stage=stage, ran=ran, seconds=round(time.perf_counter() - start, 2))


# The last line of a Python traceback: `ValueError: ...`, `lightning...MisconfigurationException: ...`.
_RAISED = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Z]\w*(?:Error|Exception|Interrupt)\b(?::.*)?$")


def stage_error(lines: list[str]) -> str:
    """The most telling line of a failed stage's output: doclife's own error, else the exception that ended
    the stage's process (the last line of its traceback), else DVC's own error."""
    own = [line for line in lines if ": error: " in line]
    if own:
        return own[-1].split(": error: ", 1)[1].strip()
    raised = [line.strip() for line in lines if _RAISED.match(line.strip())]
    if raised:
        return raised[-1]
    dvc = [line for line in lines if "ERROR: " in line]
    if dvc:
        return dvc[-1].strip()
    return lines[-1].strip() if lines else "no output"


def dvc_checked(root: Path, args: list[str]) -> list[str]:
    """`dvc ARGS` in `root`, quietly; a failure is one line with DVC's own error."""
    code, lines = run_dvc(root, args, lambda line: None)
    if code != 0:
        raise DoclifeError(f"dvc {args[0]}: {stage_error(lines)}")
    return lines


def dvc_status(root: Path, stages: list[str]) -> dict[str, list]:
    """`dvc status --json STAGES`: for each stage (and its upstream) that differs from dvc.lock, how it differs,
    e.g. {"ingest": [{"changed deps": {"data/raw/sample.csv": "modified"}}]}. One DVC call."""
    code, lines = run_dvc(root, ["status", "--json", *stages], lambda line: None)
    if code != 0:
        raise StageFailed(f"dvc status failed: {stage_error(lines)}")
    return json.loads("\n".join(lines) or "{}")


def changed_paths(status: dict[str, list], stage: str, kind: str) -> dict[str, str]:
    """From `dvc_status`: the paths of `stage` whose `kind` ("changed deps" / "changed outs") changed, and how."""
    return {path: how for entry in status.get(stage, []) if isinstance(entry, dict)
            for path, how in entry.get(kind, {}).items()}


@contextmanager
def workspace_lock(root: Path, log: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the workspace for one lifecycle run; a second run waits here, then finds its work done.

    DVC's own lock covers one command; this one covers the whole run, so two runs never interleave
    their stages. The lock is an flock: the kernel releases it when its holder dies, even by kill -9.
    """
    path = Path(root) / ".dvc" / "tmp" / "doclife-lifecycle.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            log(f"another lifecycle run holds the workspace ({handle.read().strip() or 'unknown'}); waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
