"""The gate driven through the promote stage on a synthetic snapshot, with predictions made to order.

Models here are directories of bytes (the registry only hashes and copies them) and the serving check is
stubbed, except where loading is the point (tests/test_serving.py runs the real fresh-process check).
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_checks.io import DoclifeError, read_json, write_json, write_parquet
from flows.gate import Evidence, decide
from flows.policy import BaselinePolicy, BootstrapPolicy, DataPolicy, MetricPolicy, PromoteConfig, SlicePolicy
from flows.promote import champion_status, promote
from flows.registry import Registry
from flows.scoring import Interval
from flows.serving import ServingResult
from lightning_modules.synthetic import LABELS, make_snapshot

# Every rule off but the ones a test is about; `policy(...)` switches them on.
BASE = PromoteConfig(
    metrics={"macro_f1": MetricPolicy(lower_bound=0.3), "accuracy": MetricPolicy(lower_bound=0.3)},
    bootstrap=BootstrapPolicy(resamples=500, seed=1, min_improvement=0.0),
    slices=SlicePolicy(dimensions=("label",), min_size=15, max_regression=0.05),
    baselines=BaselinePolicy(majority_margin=0.0, tfidf_tolerance=None),
)


def serves(model_dir, texts, expected, cfg) -> ServingResult:
    return ServingResult(True, None, 0.1, 1.0, 1.0, len(texts))


class Lab:
    """A workspace with one snapshot; `run(...)` evaluates a made-to-order model and promotes it."""

    def __init__(self, root: Path, snapshot: Path) -> None:
        self.root, self.snapshot = root, snapshot
        self.test = pd.read_parquet(snapshot / "corpus.parquet").query("split == 'test'").reset_index(drop=True)
        self.target = self.test["label"].map(LABELS.index).to_numpy()
        self.summary = root / "summary.json"
        write_json(self.summary, {"success": True, "table_rules": {}})
        self.n_models = 0

    def probs(self, wrong: np.ndarray) -> np.ndarray:
        """Confident probabilities that are right except on the documents flagged in `wrong`."""
        predicted = np.where(wrong, (self.target + 1) % len(LABELS), self.target)
        probs = np.full((len(self.target), len(LABELS)), 0.1)
        probs[np.arange(len(self.target)), predicted] = 0.7
        return probs

    def wrong(self, rate: float, seed: int, label: str | None = None) -> np.ndarray:
        """A random share `rate` of the documents (of one label only, when given) predicted wrongly."""
        rng = np.random.default_rng(seed)
        wrong = rng.random(len(self.target)) < rate
        return wrong & (self.test["label"] == label).to_numpy() if label else wrong

    def prepare(self, wrong: np.ndarray) -> Path:
        """Write the next model and its evaluation outputs; return the model directory."""
        self.n_models += 1
        model = self.root / f"model{self.n_models}"
        model.mkdir(exist_ok=True)
        (model / "config.json").write_text("{}")
        (model / "weights.bin").write_bytes(f"model {self.n_models}".encode())
        manifest = read_json(self.snapshot / "manifest.json")
        probs = self.probs(wrong)
        frame = pd.DataFrame({"doc_id": self.test["doc_id"], "label": self.test["label"],
                              "predicted": [LABELS[i] for i in probs.argmax(1)]})
        for i, label in enumerate(LABELS):
            frame[f"prob_{label}"] = probs[:, i]
        reports = self.root / "reports"
        write_parquet(reports / "predictions.parquet", frame)
        write_json(reports / "metrics.json", {"snapshot": manifest["snapshot"], "content_sha256": manifest["content_sha256"],
                                              "baselines": {"majority": {"macro_f1": 0.1}}})
        return model

    def run(self, wrong: np.ndarray, cfg: PromoteConfig = BASE, serving=serves, **kwargs) -> dict:
        model, reports = self.prepare(wrong), self.root / "reports"
        return promote(cfg, self.root / "registry", reports / "metrics.json", reports / "predictions.parquet", model,
                       self.snapshot, self.summary, reports / "verdict.json", reports / "card.md",
                       serving_check=serving, **kwargs)

    def registry(self) -> Registry:
        return Registry(self.root / "registry")


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    return make_snapshot(tmp_path_factory.mktemp("gate") / "snapshot", n_docs=2000, seed=5)


@pytest.fixture
def lab(tmp_path, snapshot) -> Lab:
    return Lab(tmp_path, snapshot)


def failed(verdict: dict) -> list[str]:
    return [c["name"] for c in verdict["checks"] if not c["passed"]]


def test_first_model_meets_the_floors_only(lab):
    verdict = lab.run(lab.wrong(0.3, seed=1))
    assert verdict["promoted"] == 1 and verdict["reason"].startswith("first model")
    kinds = {c["kind"] for c in verdict["checks"]}
    assert kinds == {"data", "serving", "bound", "baseline"}  # no champion: no change, bootstrap or slice rule
    assert lab.registry().champion()["version"] == verdict["version"] == "v0001"
    assert "# Model card: v0001" in (lab.root / "reports/card.md").read_text()


def test_first_model_below_a_floor_is_refused_and_the_floor_named(lab):
    verdict = lab.run(lab.wrong(0.8, seed=1))
    assert verdict["promoted"] == 0 and "lower_bound:macro_f1" in failed(verdict)
    assert lab.registry().champion() is None


def test_clearly_better_challenger_is_promoted_with_its_interval(lab):
    lab.run(lab.wrong(0.3, seed=1))
    verdict = lab.run(lab.wrong(0.05, seed=2))
    assert verdict["promoted"] == 1, verdict["reason"]
    assert verdict["champion_after"] == "v0002" and verdict["champion_rescored"] is False
    low, high = verdict["improvement"]["interval"]
    assert 0 < low < verdict["improvement"]["observed"] < high
    assert "beats champion v0001" in verdict["reason"]


def test_better_within_noise_is_refused(lab):
    cfg = replace(BASE, slices=replace(BASE.slices, dimensions=()))  # random errors also move small slices
    champion = lab.wrong(0.2, seed=1)
    mistakes, right = np.flatnonzero(champion), np.flatnonzero(~champion)
    challenger = champion.copy()
    challenger[mistakes[:10]] = False  # fixes ten of the champion's mistakes, makes six new ones
    challenger[right[:6]] = True
    lab.run(champion, cfg)
    verdict = lab.run(challenger, cfg)
    assert verdict["promoted"] == 0 and verdict["improvement"]["observed"] > 0
    assert failed(verdict) == ["bootstrap:macro_f1"] and "within noise" in verdict["reason"]
    assert verdict["improvement"]["interval"][0] <= 0 < verdict["improvement"]["interval"][1]
    assert lab.registry().champion()["version"] == "v0001"


def test_better_on_average_but_worse_on_a_slice_is_refused_naming_the_slice(lab):
    lab.run(lab.wrong(0.35, seed=1))
    # Almost perfect except on food, where most documents go wrong: the champion did better there.
    wrong = lab.wrong(0.02, seed=2) | lab.wrong(0.6, seed=3, label="food")
    verdict = lab.run(wrong)
    assert verdict["promoted"] == 0
    assert failed(verdict) == ["slice:label=food"], verdict["reason"]
    assert "slice label=food" in verdict["reason"]
    assert next(c for c in verdict["checks"] if c["kind"] == "bootstrap")["passed"]


def test_worse_than_tfidf_logistic_regression_is_refused(lab):
    cfg = replace(BASE, baselines=BaselinePolicy(majority_margin=0.0, tfidf_tolerance=0.02))
    verdict = lab.run(lab.wrong(0.35, seed=1), cfg)
    assert verdict["promoted"] == 0 and failed(verdict) == ["baseline:tfidf_lr"]
    assert verdict["baselines"]["tfidf_lr"]["macro_f1"] > 0.7  # the synthetic topics are easy for n-grams
    assert verdict["baselines"]["majority"]["macro_f1"] < 0.2


def test_a_model_that_does_not_load_is_never_promoted(lab):
    def broken(model_dir, texts, expected, cfg):
        return ServingResult(False, "fresh process failed: OSError: no weights", None, None, None, 0)

    verdict = lab.run(lab.wrong(0.1, seed=1), serving=broken)
    assert verdict["promoted"] == 0 and failed(verdict) == ["serving"]
    assert "does not serve" in verdict["reason"] and lab.registry().champion() is None


def test_a_suspiciously_large_improvement_is_refused(lab):
    cfg = replace(BASE, metrics={**BASE.metrics, "macro_f1": MetricPolicy(lower_bound=0.3, max_change=0.2)})
    lab.run(lab.wrong(0.5, seed=1), cfg)
    verdict = lab.run(np.zeros(len(lab.target), bool), cfg)
    assert verdict["promoted"] == 0 and failed(verdict) == ["max_change:macro_f1"]
    assert "leakage" in verdict["reason"]


def test_a_tolerated_regression_passes_and_a_larger_one_fails(lab):
    cfg = replace(BASE, metrics={"macro_f1": MetricPolicy(lower_bound=0.3), "accuracy": MetricPolicy(min_change=-0.02)},
                  bootstrap=replace(BASE.bootstrap, min_improvement=-1.0), slices=replace(BASE.slices, dimensions=()))
    champion = lab.wrong(0.10, seed=1)
    right = np.flatnonzero(~champion)

    def worse_by(n: int) -> np.ndarray:  # the champion's mistakes plus n more
        wrong = champion.copy()
        wrong[right[:n]] = True
        return wrong

    lab.run(champion, cfg)
    n = len(lab.target)
    assert lab.run(worse_by(int(0.015 * n)), cfg)["promoted"] == 1  # 1.5 points worse: tolerated
    assert failed(lab.run(worse_by(int(0.05 * n)), cfg)) == ["min_change:accuracy"]


def test_failed_validation_refuses_unless_overridden_and_drift_is_honoured(lab):
    write_json(lab.summary, {"success": False, "table_rules": {"min_rows": {"severity": "fail", "success": False}}})
    verdict = lab.run(lab.wrong(0.1, seed=1))
    assert failed(verdict) == ["validation"] and "min_rows" in verdict["reason"]
    allowed = replace(BASE, data=DataPolicy(allow_failed_validation=True))
    assert lab.run(lab.wrong(0.1, seed=2), allowed)["promoted"] == 1
    write_json(lab.summary, {"success": True, "table_rules": {}, "drift": {"score": 0.4, "budget": 0.2}})
    verdict = lab.run(lab.wrong(0.0, seed=3))
    assert "drift" in failed(verdict) and "over budget" in verdict["reason"]


def test_a_champion_from_another_snapshot_is_scored_again_on_this_one(lab, tmp_path):
    lab.run(lab.wrong(0.3, seed=1))
    other = Lab(lab.root, make_snapshot(tmp_path / "snapshot2", n_docs=2000, seed=9))
    other.n_models = lab.n_models
    calls = []

    def scorer(model_dir: Path, texts: list[str]):
        calls.append(len(texts))
        return other.probs(other.wrong(0.3, seed=4)), list(reversed(LABELS))  # columns in another order

    verdict = other.run(other.wrong(0.05, seed=2), scorer=scorer)
    assert calls == [len(other.target)] and verdict["champion_rescored"] is True
    assert verdict["champion_scores"]["macro_f1"] < 0.5  # columns were re-ordered: reversed labels score badly
    assert verdict["content_sha256"] == read_json(other.snapshot / "manifest.json")["content_sha256"]


def test_evaluation_of_another_snapshot_is_an_error_naming_the_file(lab, tmp_path):
    lab.run(lab.wrong(0.3, seed=1))
    metrics = lab.root / "reports/metrics.json"
    write_json(metrics, {**read_json(metrics), "content_sha256": "0" * 64})
    with pytest.raises(DoclifeError, match="metrics.json: scored on snapshot"):
        promote(BASE, lab.root / "registry", metrics, lab.root / "reports/predictions.parquet", lab.root / "model1",
                lab.snapshot, lab.summary, lab.root / "v.json", lab.root / "c.md", serving_check=serves)


def test_a_champion_of_another_label_set_is_a_one_line_refusal_naming_both(lab, tmp_path):
    lab.run(lab.wrong(0.3, seed=1))
    two = Lab(tmp_path / "two", make_snapshot(tmp_path / "two/snapshot", n_docs=400, seed=3, labels=LABELS[:2]))
    two.root, two.n_models = lab.root, lab.n_models  # the same workspace and registry, a corpus with two labels
    model, reports = two.prepare(np.zeros(len(two.target), dtype=bool)), lab.root / "reports"
    predictions = pd.read_parquet(reports / "predictions.parquet").drop(columns=[f"prob_{x}" for x in LABELS[2:]])
    write_parquet(reports / "predictions.parquet", predictions)
    with pytest.raises(DoclifeError) as refusal:
        promote(BASE, lab.root / "registry", reports / "metrics.json", reports / "predictions.parquet", model,
                two.snapshot, lab.summary, reports / "verdict.json", reports / "card.md", serving_check=serves)
    message = str(refusal.value)
    assert "\n" not in message and f"[{', '.join(LABELS)}]" in message and f"[{', '.join(LABELS[:2])}]" in message
    assert "doclife init" in message and "doclife promote v0002 --force" in message
    assert lab.registry().champion()["version"] == "v0001"
    lab.registry().force("v0002", "the corpus now has two labels")  # what the message says works
    assert lab.registry().champion()["version"] == "v0002"


def test_a_rerun_repeats_the_recorded_verdict_without_deciding_again(lab):
    first = lab.run(lab.wrong(0.3, seed=1))
    refused = lab.run(lab.wrong(0.29, seed=2))
    assert refused["promoted"] == 0
    lab.n_models = 1  # the same model bytes again, as after a crash once the decision was recorded
    again = lab.run(lab.wrong(0.29, seed=2))
    assert again == refused and len(lab.registry().history()) == 2
    lab.n_models = 0  # the champion itself again
    assert lab.run(lab.wrong(0.3, seed=1)) == first and len(lab.registry().history()) == 2
    # Under another policy the champion is not judged against itself: nothing to decide.
    lab.n_models = 0
    again = lab.run(lab.wrong(0.3, seed=1), replace(BASE, bootstrap=replace(BASE.bootstrap, resamples=200)))
    assert again["decision"] == "unchanged" and len(lab.registry().history()) == 2
    # Once another model holds the champion seat, the refused one is judged again, against it.
    lab.n_models = 2
    assert lab.run(lab.wrong(0.02, seed=5))["champion_after"] == "v0003"
    lab.n_models = 1
    assert lab.run(lab.wrong(0.29, seed=2))["champion_before"] == "v0003"
    assert len(lab.registry().history()) == 4


def test_status_keeps_its_shape_and_adds_the_tfidf_baseline(lab):
    assert champion_status(lab.root / "registry") == {"champion": None}
    lab.run(lab.wrong(0.2, seed=1))
    champion = champion_status(lab.root / "registry")["champion"]
    assert set(champion["metrics"]) == {"accuracy", "macro_f1", "roc_auc"}
    assert "macro_f1" in champion["baselines"]["majority"] and "tfidf_lr" in champion["baselines"]
    assert Path(champion["path"], "weights.bin").is_file()


def test_a_missing_metric_fails_its_checks():
    cfg = replace(BASE, metrics={"roc_auc": MetricPolicy(lower_bound=0.5, min_change=0.0)})
    scores = {"accuracy": 0.9, "macro_f1": 0.9, "roc_auc": None}
    ev = Evidence(scores, {**scores, "roc_auc": 0.9}, Interval(0.01, 0.005, 0.02),
                  validation={"success": True, "table_rules": {}}, serving=ServingResult(True, None, 0.1, 1, 1.0, 1),
                  baselines={"majority": {"macro_f1": 0.1}})
    verdict = decide(ev, cfg)
    assert not verdict.promote
    assert {c.name for c in verdict.failed()} == {"lower_bound:roc_auc", "min_change:roc_auc"}
    assert "roc_auc missing" in verdict.reason


def test_a_slice_dimension_that_cannot_be_computed_fails_the_gate(tmp_path, snapshot):
    # A snapshot written before documents carried their source has no `source` column to slice by.
    old = shutil.copytree(snapshot, tmp_path / "old-snapshot")
    pd.read_parquet(old / "corpus.parquet").drop(columns="source").to_parquet(old / "corpus.parquet", index=False)
    lab = Lab(tmp_path / "lab", old)
    cfg = replace(BASE, slices=replace(BASE.slices, dimensions=("label", "source")))
    verdict = lab.run(lab.wrong(0.1, seed=1), cfg)
    assert verdict["promoted"] == 0 and failed(verdict) == ["slice:source"]
    assert "source" in verdict["reason"]


KILLER = """
import os, signal, sys
from pathlib import Path
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
import test_gate

name, nth = sys.argv[3], int(sys.argv[4])
real, seen = os.replace, [0]

def replace(src, dst):  # every atomic write ends in os.replace: die right before the chosen one
    if Path(dst).name == name:
        seen[0] += 1
        if seen[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst)

os.replace = replace
root = Path(sys.argv[2])
test_gate.promote(test_gate.BASE, root / "registry", root / "reports/metrics.json", root / "reports/predictions.parquet",
                  root / "model2", Path(sys.argv[5]), root / "summary.json", root / "reports/verdict.json",
                  root / "reports/card.md", serving_check=test_gate.serves)
"""


@pytest.mark.parametrize("name, nth", [("v0002", 1), ("registry.json", 1), ("registry.json", 2), ("verdict.json", 1)],
                         ids=["copying the model", "registering", "recording the decision", "writing the verdict"])
def test_kill_9_during_promotion_leaves_old_or_new_champion_and_the_rerun_completes(lab, name, nth):
    import subprocess
    import sys

    from flows.registry import model_digest

    lab.run(lab.wrong(0.3, seed=1))
    better = lab.wrong(0.05, seed=2)
    # Lay out the challenger's inputs as the evaluate stage would, then promote it in a process that dies.
    lab.prepare(better)
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", KILLER, str(root), str(lab.root), name, str(nth), str(lab.snapshot)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]

    reg = lab.registry()
    champion = reg.champion()  # the registry still reads, and names a whole model
    new = model_digest(lab.root / "model2")
    assert champion["model_sha256"] in {model_digest(lab.root / "model1"), new}
    assert (Path(champion["path"]) / "weights.bin").is_file()

    lab.n_models = 1
    verdict = lab.run(better)  # the re-run completes: the better model ends up champion, decided once
    assert reg.champion()["model_sha256"] == new and verdict["promoted"] == 1
    assert [e["decision"] for e in reg.history()].count("promoted") == 2
