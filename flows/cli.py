"""The `doclife` console script: `init` makes a workspace; one subcommand per stage; `run` and `serve` the
lifecycle; `status`, `history`, `predict`, `promote --force/--rollback` and `reproduce` for its registry.

Each stage subcommand reads `params.yaml` in the current directory (the workspace), calls that stage's
function with the paths of `flows.layout.Layout`, and prints what the stage measured. Heavy libraries
are imported inside the subcommand so that `doclife status` stays instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data_checks.io import DoclifeError, atomic_path, first_line, relative_if_inside
from flows.config import Params, load_params
from flows.layout import Layout

if TYPE_CHECKING:
    from data_checks.config import EngineConfig
    from lightning_modules.checkpoint import BaseCheckpoint

STAGES = ("sample", "ingest", "clean", "validate", "snapshot", "tokenize", "pretrain", "finetune", "evaluate", "promote")


def _engine(p: Params, at: Layout) -> EngineConfig:
    """The engine section with engine.reuse's store in this workspace (params.yaml names it relative to it)."""
    return replace(p.engine, reuse=str(at.root / p.engine.reuse)) if p.engine.reuse else p.engine


def _sample(p: Params, at: Layout) -> dict[str, Any]:
    from data_checks.sample_corpus import write_sample_corpus

    return write_sample_corpus(p.sample, at.sample_corpus)


def _ingest(p: Params, at: Layout) -> dict[str, Any]:
    from data_checks.ingest import ingest

    return ingest(p.ingest, at.root / p.ingest.source, at.ingested, _engine(p, at))


def _clean(p: Params, at: Layout) -> dict[str, Any]:
    from data_checks.clean import clean

    return clean(p.clean, at.ingested, at.cleaned, at.clean_report, at.clean_summary, _engine(p, at))


def _validate(p: Params, at: Layout) -> dict[str, Any]:
    from data_checks.validate import validate

    from data_checks.snapshot import PROFILE_FILE

    # The snapshot still in the workspace is the previous one: this corpus's drift is measured against it.
    return validate(p.validate, at.cleaned, at.validated, at.quarantine, at.findings, at.validation_summary,
                    at.data_docs, at.snapshot / PROFILE_FILE, _engine(p, at))


def _snapshot(p: Params, at: Layout) -> dict[str, Any]:
    from data_checks.snapshot import snapshot

    return snapshot(at.validated, at.validation_summary, at.snapshot, p.validate.drift, p.snapshot, _engine(p, at))


def _base(p: Params, at: Layout) -> BaseCheckpoint | None:
    """The checkpoint pretrain.init_from names (None without one): what tokenize and pretrain start from."""
    from flows.init_from import resolve_init_from

    return resolve_init_from(p.pretrain.init_from, at.root, at.registry(p.promote.registry))


def _tokenize(p: Params, at: Layout) -> dict[str, Any]:
    from lightning_modules.tokenizer import train_tokenizer

    return train_tokenizer(p.tokenize, at.snapshot, at.tokenizer, base=_base(p, at))


def _pretrain(p: Params, at: Layout) -> dict[str, Any]:
    from lightning_modules.train import pretrain

    return pretrain(p.pretrain, at.snapshot, at.tokenizer, at.model("pretrain"), at.checkpoints("pretrain"),
                    at.metrics("pretrain"), at.curve("pretrain"), base=_base(p, at))


def _finetune(p: Params, at: Layout) -> dict[str, Any]:
    from lightning_modules.train import finetune

    return finetune(p.finetune, at.snapshot, at.model("pretrain"), list(p.validate.labels), at.model("finetune"),
                    at.checkpoints("finetune"), at.metrics("finetune"), at.curve("finetune"))


def _evaluate(p: Params, at: Layout) -> dict[str, Any]:
    from lightning_modules.evaluate import evaluate

    return evaluate(p.evaluate, at.snapshot, at.model("finetune"), at.metrics("evaluate"), at.predictions,
                    at.confusion_csv, at.confusion_png)


def _promote(p: Params, at: Layout) -> dict[str, Any]:
    from flows.promote import promote
    from flows.reproduce import lineage, stage_params

    return promote(p.promote, at.registry(p.promote.registry), at.metrics("evaluate"), at.predictions,
                   at.model("finetune"), at.snapshot, at.validation_summary, at.verdict, at.model_card,
                   params=stage_params(p), batch_size=p.evaluate.batch_size, lineage=lineage(at, p))


def _promote_by_hand(args: argparse.Namespace, at: Layout) -> int:
    """`promote --rollback` and `promote VERSION --force --reason TEXT`: a person moves the champion."""
    from flows.registry import Registry

    registry = Registry(at.registry(load_params(at.params).promote.registry))
    if args.rollback:
        if args.version or args.force:
            raise DoclifeError("promote --rollback takes no VERSION and no --force")
        event = registry.rollback(args.reason or "")
    else:
        if not (args.version and args.force):
            raise DoclifeError("promote VERSION needs --force (and --reason): without them `doclife promote` runs the gate")
        event = registry.force(args.version, args.reason or "")
    print(json.dumps({k: event[k] for k in ("version", "decision", "reason", "time", "actor", "champion_before",
                                            "champion_after")}, indent=2, ensure_ascii=False))
    return 0


STAGE_COMMANDS: dict[str, Callable[[Params, Layout], dict[str, Any]]] = {
    "sample": _sample, "ingest": _ingest, "clean": _clean, "validate": _validate, "snapshot": _snapshot, "tokenize": _tokenize,
    "pretrain": _pretrain, "finetune": _finetune, "evaluate": _evaluate, "promote": _promote,
}


def _run(args: argparse.Namespace, at: Layout) -> int:
    # A failed run leaves params.yaml as it was: a bad --source must not become the next run's source.
    before = at.params.read_text(encoding="utf-8") if args.source else None
    try:
        if args.source:
            from data_checks.sources import require_trackable, source_files
            from flows.config import set_param

            source = Path(args.source).resolve()
            source_files(require_trackable(args.source))  # a missing or empty source fails before params.yaml changes

            # The source becomes part of params.yaml, so `dvc repro` reproduces this very run.
            set_param(at.params, "ingest.source", relative_if_inside(source, at.root))
        # Against a real server (`make ui`) the run sends heartbeats (set before Prefect is imported), and the
        # server marks it Crashed if they stop (kill -9, a lost machine) instead of showing it "Running" for good.
        heartbeat = load_params(at.params).schedule.heartbeat_seconds
        os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(heartbeat))
        from prefect.settings import PREFECT_API_URL

        from flows.lifecycle import lifecycle

        log_file = _log_to_file(at, "run")
        if PREFECT_API_URL.value():
            from flows.deployments import ensure_crash_automation

            ensure_crash_automation(heartbeat)
        try:
            summary = lifecycle(str(at.root))
        except DoclifeError as exc:
            raise DoclifeError(f"{exc} (log: {relative_if_inside(log_file, at.root)})") from None
    except BaseException:
        if before is not None and at.params.read_text(encoding="utf-8") != before:
            with atomic_path(at.params) as tmp:
                tmp.write_text(before, encoding="utf-8")
        raise
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0


class _WithoutTraceback(logging.Formatter):
    """The terminal's formatter: each record on its line, without the traceback the log file keeps."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def _log_to_file(at: Layout, command: str) -> Path:
    """Send every log record, tracebacks included, to a file under .doclife/logs/ (Prefect's API handler
    still sends them to the server's run page); the terminal shows the same records without tracebacks."""
    import time

    path = at.root / ".doclife" / "logs" / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for console in root.handlers:
        console.setFormatter(_WithoutTraceback(console.formatter))
    root.handlers.insert(0, handler)
    return path


def _serve(args: argparse.Namespace, at: Layout) -> int:
    from flows.deployments import serve_deployments

    serve_deployments(at.root)
    return 0


def _check(args: argparse.Namespace, at: Layout) -> int:
    from data_checks.check import check
    from data_checks.config import EngineConfig, IngestConfig, ValidateConfig

    # Thresholds from the workspace's params.yaml when there is one; the reading of SOURCE from the flags.
    params = load_params(at.params) if at.params.is_file() else None
    rules = params.validate if params else ValidateConfig()
    reading = IngestConfig(source=args.source, text_column=args.text_column, label_column=args.label_column,
                           header=not args.no_header)
    labels = [label.strip() for label in args.labels.split(",")] if args.labels else None
    # A check keeps nothing for later: its batches are not the stages', and its pass would prune what they kept.
    engine = replace(params.engine, reuse=None) if params else EngineConfig()
    if args.engine:
        engine = replace(engine, mode=args.engine)
    summary = check(Path(args.source), reading, rules, Path(args.out), labels, params.clean if params else None,
                    Path(args.reference) if args.reference else None, engine)
    print(json.dumps({k: summary[k] for k in ("source", "rows_in", "validated", "quarantined", "warnings", "findings",
                                              "success", "failures", "report", "data_docs")}, indent=2,
                     ensure_ascii=False))
    # Non-zero when a fail-severity rule failed, so scripts and CI can gate on a corpus.
    return 0 if summary["success"] else 1


def _status(args: argparse.Namespace, at: Layout) -> int:
    from flows.promote import champion_status

    status = champion_status(at.registry(load_params(at.params).promote.registry))
    if args.json:
        print(json.dumps(status, indent=2, ensure_ascii=False))
    elif status["champion"] is None:
        print("no champion yet: run `doclife run` (or `dvc repro`) to train and promote one")
    else:
        c = status["champion"]
        print(f"champion {c['version']} (snapshot {c['data_snapshot']}): "
              + ", ".join(f"{k} {v:.4f}" for k, v in c["metrics"].items()) + f"\n  {c['path']}")
    return 0


def _history(args: argparse.Namespace, at: Layout) -> int:
    from flows.registry import Registry

    events = Registry(at.registry(load_params(at.params).promote.registry)).history()
    keys = ("version", "decision", "reason", "time", "actor", "champion_before", "champion_after")
    if args.json:
        print(json.dumps([{k: e.get(k) for k in keys} for e in events], indent=2, ensure_ascii=False))
    else:
        for e in events:
            print(f"{e['time']}  {e['version']}  {e['decision']:<9} {e.get('actor', '')}  {e['reason']}")
    return 0


def _predict(args: argparse.Namespace, at: Layout) -> int:
    # Neither module imports torch or transformers (seconds to load): predict_file answers a wrong path,
    # format, encoding or model before it loads them.
    from flows.registry import Registry
    from flows.serving import predict_file

    params = load_params(at.params)
    entry = Registry(at.registry(params.promote.registry)).resolve(args.model)
    # The input has the corpus's own shape by default: its text in the column the workspace ingests.
    result = predict_file(Path(entry["path"]), Path(args.input), Path(args.output), params.evaluate.batch_size,
                          args.encoding, args.text_column or params.ingest.text_column)
    print(json.dumps({"model": entry["version"], **result}, indent=2, ensure_ascii=False))
    return 0


def _reproduce(args: argparse.Namespace, at: Layout) -> int:
    from flows.registry import Registry
    from flows.reproduce import reproduce

    registry = Registry(at.registry(load_params(at.params).promote.registry))
    result = reproduce(at, registry, registry.resolve(args.version)["version"],
                       Path(args.workdir) if args.workdir else None)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        same = "identical" if result["identical"] else f"{result['predictions_differing']} of {result['predictions']} differ"
        print(f"{result['version']} rebuilt in {result['seconds']} s: test predictions {same} "
              f"(largest probability difference {result['max_probability_difference']:.2e})")
        for name, value in result["metrics"].items():
            print(f"  {name:<10} {value:.4f}  registered {result['registered_metrics'].get(name, float('nan')):.4f}")
    return 0 if result["identical"] else 1


def _init(args: argparse.Namespace, at: Layout) -> int:
    from flows.workspace import init_workspace

    made = init_workspace(Path(args.directory), Path(args.source), args.text_column, args.label_column, args.remote)
    print(json.dumps(made, indent=2, ensure_ascii=False))
    print(f"next: cd {args.directory} && doclife run", file=sys.stderr)
    return 0


def _code(args: argparse.Namespace, at: Layout) -> int:
    from flows.workspace import write_code_stamps

    print(json.dumps(write_code_stamps(at.root), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="doclife", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    stages = {stage: sub.add_parser(stage, help=f"run the {stage} stage (reads params.yaml in the current directory)")
              for stage in STAGES}
    # `promote` with no argument is the gate (the DVC stage); its options are a person's decisions.
    cmd = stages["promote"]
    cmd.add_argument("version", nargs="?", help="with --force: the version to make champion, bypassing the gate")
    cmd.add_argument("--force", action="store_true", help="make VERSION the champion without the gate (recorded)")
    cmd.add_argument("--rollback", action="store_true", help="give the champion alias back to the previous champion")
    cmd.add_argument("--reason", help="why (recorded in the history; required with --force)")
    run = sub.add_parser("run", help="run the whole lifecycle as a Prefect flow")
    run.add_argument("--source", help="the corpus to ingest, a file or a directory of files (recorded as "
                     "ingest.source in params.yaml)")
    chk = sub.add_parser("check", help="validate any corpus file outside the pipeline; findings in OUT/report.parquet")
    chk.add_argument("source", help="a CSV, TSV, JSONL or Parquet file (.gz or .zst compressed, too), a directory of "
                     "them or a quoted glob such as 'shards/*.jsonl.gz' (only read)")
    chk.add_argument("--text-column", required=True)
    chk.add_argument("--label-column", help="omit for an unlabelled corpus (the label rules then do not apply)")
    chk.add_argument("--no-header", action="store_true", help="CSV/TSV whose first line is data; columns are 0, 1, ...")
    chk.add_argument("--labels", help="the declared labels, comma-separated (default: the labels found in SOURCE)")
    chk.add_argument("--reference", help="a snapshot directory (or its drift_profile.json) to measure drift against")
    chk.add_argument("--out", required=True, help="directory for report.parquet, summary.json and data_docs/")
    chk.add_argument("--engine", choices=("local", "ray"), help="where the per-batch work runs (default: the "
                     "workspace's engine.mode, else local); ray connects to engine.ray_address or RAY_ADDRESS, "
                     "else starts a Ray on this machine")
    sub.add_parser("serve", help="serve the scheduled lifecycle and the source watcher (needs a Prefect server)")
    init = sub.add_parser("init", help="make a workspace for a corpus: git + DVC repository, params.yaml, dvc.yaml")
    init.add_argument("directory", help="the new workspace (a new or empty directory)")
    init.add_argument("--source", required=True, help="the corpus: a CSV, TSV, JSONL or Parquet file (.gz or .zst "
                      "compressed, too) or a directory of them (only read)")
    init.add_argument("--text-column", required=True)
    init.add_argument("--label-column", help="the labels are read from it into validate.labels")
    init.add_argument("--remote", help="a directory the team reaches for the DVC remote and the registry "
                                       "(default: .dvc-storage/ inside the workspace)")
    rep = sub.add_parser("reproduce", help="rebuild a registered version from its record and compare its predictions")
    rep.add_argument("version", help="a version such as v0001, or champion")
    rep.add_argument("--json", action="store_true", help="print one JSON object")
    rep.add_argument("--workdir", help="rebuild here and keep it (default: a temporary directory, removed)")
    sub.add_parser("code", help="stamp the installed code each stage runs (the `code` stage of dvc.yaml)")
    for name, text in (("status", "show the current champion"), ("history", "every promotion decision, newest first")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--json", action="store_true", help="print JSON")
    predict = sub.add_parser("predict", help="batch prediction with a registered model")
    predict.add_argument("--model", default="champion", help="champion, challenger or a version such as v0003")
    predict.add_argument("--input", required=True, help="CSV, TSV, JSONL or Parquet with a column of text")
    predict.add_argument("--text-column", help="the input's text column (default: ingest.text_column of params.yaml)")
    predict.add_argument("--output", required=True,
                         help="where to write predicted, flag and prob_<label> (.csv/.jsonl/.parquet, UTF-8)")
    predict.add_argument("--encoding", help="the CSV/TSV/JSONL input's text encoding, e.g. gbk (default: utf-8)")
    return parser


def prefect_environment(root: Path) -> None:
    """Prefect settings for every way doclife starts (make, .venv/bin/doclife, a runner's flow-run process),
    set before Prefect is imported; a value already in the environment wins."""
    # The workspace's own Prefect home: runs started from the CLI land in the database `make ui` shows.
    os.environ.setdefault("PREFECT_HOME", str(root / ".prefect"))
    # Its embedded server's telemetry heartbeat contends for the SQLite database.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A connected client retries for 2 + 4 + ... + 128 s (about 4 min): a server restart does not fail a run.
    os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "7")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    at = Layout(Path.cwd())
    if args.command in ("run", "serve"):
        prefect_environment(at.root)
    try:
        if args.command == "promote" and (args.rollback or args.force or args.version):
            return _promote_by_hand(args, at)
        if args.command in STAGE_COMMANDS:
            result = STAGE_COMMANDS[args.command](load_params(at.params), at)
            print(json.dumps(result, indent=2, ensure_ascii=False, default=str))
            return 0
        return {"run": _run, "check": _check, "serve": _serve, "status": _status, "history": _history,
                "predict": _predict, "init": _init, "code": _code, "reproduce": _reproduce}[args.command](args, at)
    except DoclifeError as exc:
        print(f"doclife {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        # A bug, or a library failing in a way doclife does not know: one line here, the traceback in a file.
        if os.environ.get("DOCLIFE_TRACEBACK"):
            raise
        log = _crash_log(at, args.command)
        print(f"doclife {args.command}: error: {type(exc).__name__}: {first_line(exc)} (traceback: {log})",
              file=sys.stderr)
        return 1


def _crash_log(at: Layout, command: str) -> str:
    import tempfile
    import time
    import traceback

    logs = at.root / ".doclife" / "logs" if at.params.is_file() else Path(tempfile.gettempdir()) / "doclife-logs"
    path = logs / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(traceback.format_exc(), encoding="utf-8")
    except OSError:
        return "not written (set DOCLIFE_TRACEBACK=1 to see it)"
    return relative_if_inside(path, at.root)


if __name__ == "__main__":
    sys.exit(main())
