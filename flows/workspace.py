"""Workspaces: one per corpus, each its own git and DVC repository, made by `doclife init` from the templates
the built-in demo workspace (this repository's `dvc.yaml` and `params.yaml`) is made from.

The code lives in the installed doclife, not in the workspace, so a stage depends on that code through a
stamp: `.doclife/code/STAGE.json` holds the sha256 of the modules the stage runs (`STAGE_CODE`). The `code`
stage of `dvc.yaml` rewrites the stamps on every `dvc repro` (and the flow before each run); a stamp
changes only when its stage's code did, so an upgrade re-runs exactly the stages it must.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from data_checks.io import DoclifeError, atomic_dir, atomic_path, first_line, relative_if_inside
from data_checks.sources import require_trackable
from flows.dvc import dvc_checked
from flows.init_from import BASE_STAMP, base_stamp

TEMPLATES = Path(__file__).resolve().parent / "templates"
CODE_STAMPS = ".doclife/code"

# The modules each stage runs: what it imports at the top level and what its functions import lazily
# (tests/test_dvc_yaml.py checks the top-level part). Config and I/O plumbing is left out: values come from
# params.yaml, listed key by key in dvc.yaml.
_TRAINING = ("lightning_modules.train", "lightning_modules.callbacks", "lightning_modules.modules",
             "lightning_modules.data", "lightning_modules.model", "lightning_modules.checkpoint",
             "lightning_modules.snapshot", "lightning_modules.token_shards", "data_checks.snapshot")
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "sample": ("data_checks.sample_corpus",),
    "ingest": ("data_checks.ingest", "data_checks.sources", "data_checks.out_of_core", "data_checks.reuse"),
    "clean": ("data_checks.clean", "data_checks.core_rules", "data_checks.rulebook", "data_checks.ingest",
              "data_checks.sources", "data_checks.out_of_core", "data_checks.engines", "data_checks.reuse"),
    "validate": ("data_checks.validate", "data_checks.clean", "data_checks.ingest", "data_checks.sources",
                 "data_checks.out_of_core", "data_checks.engines", "data_checks.reuse", "data_checks.row_measures",
                 "data_checks.expectations", "data_checks.rulebook", "data_checks.core_rules",
                 "data_checks.text_quality", "data_checks.text_arrays", "data_checks.duplicates", "data_checks.label_noise",
                 "data_checks.drift", "data_checks.drift_profile"),
    "snapshot": ("data_checks.snapshot", "data_checks.drift_profile"),
    # With pretrain.init_from, tokenize loads the checkpoint's tokenizer (lightning_modules.checkpoint, .model).
    "tokenize": ("lightning_modules.tokenizer", "lightning_modules.token_shards", "lightning_modules.checkpoint",
                 "lightning_modules.model", "lightning_modules.snapshot", "data_checks.snapshot"),
    # pretrain reads lightning_modules.config for the named model sizes (base, small, ...), and records the
    # checkpoint it starts from as flows.init_from resolves it.
    "pretrain": (*_TRAINING, "lightning_modules.config", "flows.init_from", "flows.registry"),
    "finetune": _TRAINING,
    "evaluate": ("lightning_modules.evaluate", "lightning_modules.model", "lightning_modules.snapshot",
                 "data_checks.snapshot"),
    "promote": ("flows.promote", "flows.gate", "flows.policy", "flows.registry", "flows.scoring", "flows.slices",
                "flows.baselines", "flows.serving", "flows.model_card", "lightning_modules.evaluate",
                "lightning_modules.model", "lightning_modules.snapshot", "data_checks.snapshot"),
}


def module_file(module: str) -> Path:
    """Where the installed doclife keeps `module`'s source (site-packages, or the checkout when editable)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise DoclifeError(f"{module}: not found in the installed doclife (reinstall it)")
    return Path(spec.origin)


def code_stamp(stage: str) -> dict[str, Any]:
    """The identity of the code `stage` runs: sha256 over its modules' names and bytes."""
    digest = hashlib.sha256()
    for module in sorted(STAGE_CODE[stage]):
        digest.update(module.encode())
        digest.update(hashlib.sha256(module_file(module).read_bytes()).digest())
    return {"stage": stage, "sha256": digest.hexdigest(), "modules": sorted(STAGE_CODE[stage])}


def write_code_stamps(root: Path) -> dict[str, str | None]:
    """Write each stage's stamp under `root`, and the stamp of the checkpoint pretraining starts from
    (`.doclife/base.json`, see flows/init_from.py), touching only those that changed; return stage → sha256
    and `base` → the checkpoint's sha256 (None without pretrain.init_from)."""
    stamps: dict[str, str | None] = {}
    for stage in STAGE_CODE:
        stamp = code_stamp(stage)
        _write_if_changed(Path(root) / CODE_STAMPS / f"{stage}.json", stamp)
        stamps[stage] = stamp["sha256"]
    base = base_stamp(Path(root))
    _write_if_changed(Path(root) / BASE_STAMP, base)
    stamps["base"] = base.get("sha256")
    return stamps


def _write_if_changed(path: Path, stamp: dict[str, Any]) -> None:
    # An unchanged stamp keeps its bytes (and so DVC's hash of it): its stages stay skipped.
    text = json.dumps(stamp, indent=2, ensure_ascii=False) + "\n"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")


# ------------------------------------------------------------------------------------------ templates
def render_dvc_yaml(with_sample: bool) -> str:
    """The workspace's `dvc.yaml`; the demo's has the `sample` stage that generates its built-in corpus."""
    text = (TEMPLATES / "dvc.yaml").read_text(encoding="utf-8")
    if with_sample:
        return text
    text = text.replace("      - .doclife/code/sample.json:\n          cache: false\n", "")
    return re.sub(r"\n  sample:\n.*?\n(?=  \w+:\n)", "\n", text, count=1, flags=re.DOTALL)


def render_params(source: str, text_column: str, label_column: str | None, labels: list[str],
                  registry: str) -> str:
    """The demo's `params.yaml` with the corpus's own reading, labels and registry, and no `sample` section."""
    from flows.config import round_trip_yaml

    yaml = round_trip_yaml()
    data = yaml.load((TEMPLATES / "params.yaml").read_text(encoding="utf-8"))
    del data["sample"]
    data["ingest"].update(source=source, text_column=text_column, label_column=label_column)
    from ruamel.yaml.comments import CommentedSeq

    flow = CommentedSeq(labels)
    flow.fa.set_flow_style()  # [a, b, c] on one line, as the demo writes it
    data["validate"]["labels"] = flow
    data["promote"]["registry"] = registry
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


# ------------------------------------------------------------------------------------------ init
MAX_LABELS = 200


def read_labels(source: Path, text_column: str, label_column: str | None) -> tuple[list[str], list[str]]:
    """The label set of `source`, most frequent first, and the values too rare to declare (their rows are
    quarantined as unknown labels rather than failing the class-balance rule); checks the columns are there."""
    from data_checks.config import IngestConfig, ValidateConfig
    from data_checks.ingest import label_counts

    counts = label_counts(IngestConfig(source=str(source), text_column=text_column, label_column=label_column), source)
    if not label_column:
        return [], []
    if counts.empty:
        raise DoclifeError(f"{source}: label column {label_column!r} is empty")
    declared = counts[counts / counts.sum() >= ValidateConfig().min_label_share]
    if len(declared) > MAX_LABELS:
        raise DoclifeError(f"{source}: label column {label_column!r} has {len(declared)} distinct values; "
                           f"is it the label column?")
    return [str(v) for v in declared.index], [str(v) for v in counts.index.difference(declared.index)]


def init_workspace(directory: Path, source: Path, text_column: str, label_column: str | None,
                   remote: str | None = None) -> dict[str, Any]:
    """Make a workspace for the corpus `source` at `directory`: git and DVC repositories, `dvc.yaml`,
    `params.yaml` (columns checked, labels read from the data), `.gitignore`, a README, first commit.

    `remote` is where the team keeps the workspace's data and registry (a directory every machine reaches);
    by default `.dvc-storage/` inside the workspace. Everything is built beside `directory` and renamed into
    place: an error leaves nothing behind.
    """
    directory = Path(directory).absolute()
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        holds = (directory / "dvc.yaml").is_file() or (directory / "params.yaml").is_file() or (directory / ".dvc").is_dir()
        what = "already holds a workspace" if holds else "exists and is not empty"
        raise DoclifeError(f"{directory}: {what}; choose a new directory")
    source = Path(require_trackable(source)).absolute()
    labels, rare = read_labels(source, text_column, label_column)
    storage = Path(remote).absolute() if remote else directory / ".dvc-storage"
    # Paths inside the workspace are written relative to it, so the workspace can move.
    registry = relative_if_inside(storage / "registry", directory)
    with atomic_dir(directory) as tmp:
        (tmp / "dvc.yaml").write_text(render_dvc_yaml(with_sample=False), encoding="utf-8")
        (tmp / "params.yaml").write_text(
            render_params(relative_if_inside(source, directory), text_column, label_column, labels, registry),
            encoding="utf-8")
        (tmp / ".gitignore").write_text((TEMPLATES / "gitignore").read_text(encoding="utf-8"), encoding="utf-8")
        (tmp / "README.md").write_text((TEMPLATES / "README.md").read_text(encoding="utf-8").format(
            name=directory.name, source=source, text_column=text_column, label_column=label_column or "(none)",
            labels=", ".join(labels) or "(unlabelled)", remote=storage), encoding="utf-8")
        write_code_stamps(tmp)
        _git(tmp, "init", "-q")
        dvc_checked(tmp, ["init", "-q"])
        url = relative_if_inside(storage, directory)
        # Given relative to the workspace root, DVC stores it relative to .dvc/: it moves with the workspace.
        dvc_checked(tmp, ["remote", "add", "-d", "storage", url])
        for key in ("core.analytics", "core.check_update"):
            dvc_checked(tmp, ["config", key, "false"])
        _git(tmp, "add", "-A")
        _git(tmp, "commit", "-qm", f"doclife workspace for {source.name}")
    return {"workspace": str(directory), "source": str(source), "text_column": text_column,
            "label_column": label_column, "labels": labels, "rare_values_left_out": rare, "remote": str(storage),
            "registry": str(storage / "registry")}


def _git(cwd: Path, *args: str) -> None:
    # The user's own identity when git has one; the first commit must not fail where it has none.
    if shutil.which("git") is None:
        raise DoclifeError("git: not installed (a doclife workspace is a git repository)")
    known = subprocess.run(["git", "config", "user.email"], cwd=cwd, capture_output=True).returncode == 0
    identity = [] if known else ["-c", "user.name=doclife", "-c", "user.email=doclife@localhost"]
    try:
        subprocess.run(["git", *identity, *args], cwd=cwd, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        raise DoclifeError(f"git {args[0]}: {first_line(Exception(exc.stderr or exc.stdout))}") from None
