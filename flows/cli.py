"""The `doclife` console script: one subcommand per stage, plus `run`, `status` and `history`.

Each stage subcommand reads `params.yaml` in the current directory (the workspace), calls that stage's
function with the paths of `flows.layout.Layout`, and prints what the stage measured. Heavy libraries
are imported inside the subcommand so that `doclife status` stays instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from data_checks.io import DoclifeError
from flows.config import Params, load_params
from flows.layout import Layout

STAGES = ("sample", "ingest", "validate", "snapshot", "tokenize", "pretrain", "finetune", "evaluate", "promote")


def _sample(p: Params, at: Layout) -> dict[str, Any]:
    from data_checks.sample_corpus import write_sample_corpus

    return write_sample_corpus(p.sample, at.sample_corpus)


def _ingest(p: Params, at: Layout) -> dict[str, Any]:
    from data_checks.ingest import ingest

    return ingest(p.ingest, at.root / p.ingest.source, at.ingested)


def _validate(p: Params, at: Layout) -> dict[str, Any]:
    from data_checks.validate import validate

    return validate(p.validate, at.ingested, at.validated, at.quarantine, at.validation_summary, at.data_docs)


def _snapshot(p: Params, at: Layout) -> dict[str, Any]:
    from data_checks.snapshot import snapshot

    return snapshot(at.validated, at.validation_summary, at.snapshot)


def _tokenize(p: Params, at: Layout) -> dict[str, Any]:
    from lightning_modules.tokenizer import train_tokenizer

    return train_tokenizer(p.tokenize, at.snapshot, at.tokenizer)


def _pretrain(p: Params, at: Layout) -> dict[str, Any]:
    from lightning_modules.train import pretrain

    return pretrain(p.pretrain, at.snapshot, at.tokenizer, at.model("pretrain"), at.checkpoints("pretrain"),
                    at.metrics("pretrain"), at.curve("pretrain"))


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

    return promote(p.promote, p.evaluate, at.registry(p.promote.registry), at.metrics("evaluate"),
                   at.model("finetune"), at.snapshot, at.verdict)


STAGE_COMMANDS: dict[str, Callable[[Params, Layout], dict[str, Any]]] = {
    "sample": _sample, "ingest": _ingest, "validate": _validate, "snapshot": _snapshot, "tokenize": _tokenize,
    "pretrain": _pretrain, "finetune": _finetune, "evaluate": _evaluate, "promote": _promote,
}


def _run(args: argparse.Namespace, at: Layout) -> int:
    # Before Prefect is imported: its embedded server's telemetry heartbeat contends for the SQLite database.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.config import set_param
    from flows.lifecycle import lifecycle

    if args.source:
        source = Path(args.source).resolve()
        if not source.is_file():
            raise DoclifeError(f"{args.source}: no such file")
        # The source becomes part of params.yaml, so `dvc repro` reproduces this very run.
        set_param(at.params, "ingest.source", _relative_if_inside(source, at.root))
    summary = lifecycle(str(at.root))
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0


def _serve(args: argparse.Namespace, at: Layout) -> int:
    from flows.deployments import serve_deployments

    serve_deployments(at.root)
    return 0


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
    if args.json:
        print(json.dumps([{k: e[k] for k in ("version", "decision", "reason", "time")} for e in events], indent=2))
    else:
        for e in events:
            print(f"{e['time']}  {e['version']}  {e['decision']:<8}  {e['reason']}")
    return 0


def _relative_if_inside(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="doclife", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        sub.add_parser(stage, help=f"run the {stage} stage (reads params.yaml in the current directory)")
    run = sub.add_parser("run", help="run the whole lifecycle as a Prefect flow")
    run.add_argument("--source", help="the corpus file to ingest (recorded as ingest.source in params.yaml)")
    sub.add_parser("serve", help="serve the scheduled lifecycle and the source watcher (needs a Prefect server)")
    for name, text in (("status", "show the current champion"), ("history", "every promotion decision, newest first")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    at = Layout(Path.cwd())
    try:
        if args.command in STAGE_COMMANDS:
            result = STAGE_COMMANDS[args.command](load_params(at.params), at)
            print(json.dumps(result, indent=2, ensure_ascii=False, default=str))
            return 0
        return {"run": _run, "serve": _serve, "status": _status, "history": _history}[args.command](args, at)
    except DoclifeError as exc:
        print(f"doclife {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
