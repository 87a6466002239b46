"""dvc.yaml and the code agree: same paths as flows/layout.py, every config field listed key by key, each stage
stamped with the code it runs; the demo workspace is the template every `doclife init` workspace gets."""

import ast
import dataclasses
import typing
from pathlib import Path

import yaml

from flows.cli import STAGES
from flows.config import Params
from flows.init_from import BASE_STAMP
from flows.layout import Layout
from flows.workspace import STAGE_CODE, TEMPLATES, render_dvc_yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
AT = Layout(ROOT)

# Sections whose every key a stage reads (snapshot.remote is read by the flow's push, not by a stage).
STAGE_SECTIONS = {"sample": "sample", "ingest": "ingest", "clean": "clean", "validate": "validate", "tokenize": "tokenize",
                  "pretrain": "pretrain", "finetune": "finetune", "evaluate": "evaluate", "promote": "promote"}


def declared(stage: str, kind: str) -> set[str]:
    return {next(iter(e)) if isinstance(e, dict) else e for e in DVC[stage].get(kind, [])}


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_every_stage_has_a_subcommand_and_a_dvc_stage():
    assert list(DVC) == ["code", *STAGES]
    for name, stage in DVC.items():
        assert stage["cmd"] == f"doclife {name}"


def test_the_demo_workspace_is_the_template():
    assert (ROOT / "dvc.yaml").read_text() == render_dvc_yaml(with_sample=True)
    assert (ROOT / "params.yaml").read_text() == (TEMPLATES / "params.yaml").read_text()
    assert (ROOT / ".gitignore").read_text().endswith((TEMPLATES / "gitignore").read_text())


def test_a_workspace_without_the_sample_has_the_same_stages_otherwise():
    init = yaml.safe_load(render_dvc_yaml(with_sample=False))["stages"]
    assert list(init) == ["code", *STAGES[1:]]
    assert {k: v for k, v in DVC.items() if k not in ("code", "sample")} == {k: v for k, v in init.items() if k != "code"}
    assert declared("code", "outs") - {e for e in init["code"]["outs"] for e in e} == {".doclife/code/sample.json"}


def test_outputs_match_the_layout():
    assert declared("sample", "outs") == {rel(AT.sample_corpus)}
    assert declared("ingest", "outs") == {rel(AT.ingested)}
    assert declared("clean", "outs") == {rel(AT.cleaned), rel(AT.clean_report)}
    assert declared("clean", "metrics") == {rel(AT.clean_summary)}
    assert declared("validate", "outs") == {rel(AT.validated), rel(AT.quarantine), rel(AT.findings), rel(AT.data_docs)}
    assert declared("validate", "metrics") == {rel(AT.validation_summary)}
    assert declared("snapshot", "outs") == {rel(AT.snapshot)}
    assert declared("tokenize", "outs") == {rel(AT.tokenizer)}
    for stage in ("pretrain", "finetune"):
        assert declared(stage, "outs") == {rel(AT.model(stage)), rel(AT.checkpoints(stage))}
        assert declared(stage, "metrics") == {rel(AT.metrics(stage))}
        assert declared(stage, "plots") == {rel(AT.curve(stage))}
    assert declared("evaluate", "outs") == {rel(AT.predictions), rel(AT.confusion_png)}
    assert declared("evaluate", "metrics") == {rel(AT.metrics("evaluate"))}
    assert declared("evaluate", "plots") == {rel(AT.confusion_csv)}
    assert declared("promote", "metrics") == {rel(AT.verdict)}
    assert declared("promote", "outs") == {rel(AT.model_card)}


def test_each_stage_lists_every_key_of_its_section():
    hints = typing.get_type_hints(Params)
    for stage, section in STAGE_SECTIONS.items():
        keys = {f"{section}.{f.name}" for f in dataclasses.fields(hints[section])}
        assert keys <= set(DVC[stage]["params"]), f"{stage} misses {keys - set(DVC[stage]['params'])}"


def test_each_stage_depends_on_the_stamp_of_its_code():
    assert declared("code", "outs") == {f".doclife/code/{stage}.json" for stage in STAGES} | {BASE_STAMP}
    # The checkpoint pretraining starts from (pretrain.init_from) is an input of the two stages that read it.
    assert {stage for stage in STAGES if BASE_STAMP in DVC[stage].get("deps", [])} == {"tokenize", "pretrain"}
    assert set(STAGE_CODE) == set(STAGES)
    for stage in STAGES:
        assert f".doclife/code/{stage}.json" in DVC[stage]["deps"]
        for module in STAGE_CODE[stage]:
            assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module


# Modules that change no stage's output: writing files atomically, the one-line error, config parsing (values
# come from params.yaml, listed key by key; pretrain lists its config for the named model sizes), the progress bar.
PLUMBING = {"data_checks/io.py", "data_checks/config.py", "lightning_modules/config.py", "lightning_modules/progress.py"}
ROOMS = ("data_checks", "lightning_modules", "flows")


def project_imports(path: str) -> set[str]:
    """Project modules that importing `path` imports at its top level (lazy imports inside functions are
    listed in STAGE_CODE by hand: they may serve only some of a module's users)."""
    found = set()
    for node in ast.parse((ROOT / path).read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ROOMS:
            base = node.module.replace(".", "/")
            found |= {p for p in (f"{base}.py", *(f"{base}/{a.name}.py" for a in node.names)) if (ROOT / p).is_file()}
    return found


def test_each_stage_lists_the_code_its_code_imports():
    # A module missing from its stamp is one whose change DVC would not notice: the stage would be skipped with
    # stale outputs.
    for stage in STAGES:
        listed = {module.replace(".", "/") + ".py" for module in STAGE_CODE[stage]}
        reached, todo = set(), list(listed)
        while todo:
            path = todo.pop()
            if path not in reached and path not in PLUMBING:
                reached.add(path)
                todo += project_imports(path)
        assert reached <= listed, f"stage {stage} imports {sorted(reached - listed)} without listing them in deps"
