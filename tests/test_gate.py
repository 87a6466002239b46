"""The promotion gate: floors for the first model, a margin over the champion after that."""

from flows.config import PromoteConfig
from flows.gate import decide

CFG = PromoteConfig(primary_metric="macro_f1", min_improvement=0.02, floors={"macro_f1": 0.5, "accuracy": 0.6})


def scores(macro_f1: float, accuracy: float = 0.8, roc_auc: float = 0.9) -> dict[str, float]:
    return {"macro_f1": macro_f1, "accuracy": accuracy, "roc_auc": roc_auc}


def test_first_model_needs_only_the_floors():
    verdict = decide(scores(0.55), None, CFG)
    assert verdict.promote
    assert "first model" in verdict.reason
    assert [c.name for c in verdict.checks] == ["floor:macro_f1", "floor:accuracy"]


def test_first_model_below_a_floor_is_refused_and_the_floor_named():
    verdict = decide(scores(0.7, accuracy=0.5), None, CFG)
    assert not verdict.promote
    assert "floor:accuracy" in verdict.reason and "0.5000 < 0.6000" in verdict.reason


def test_clearly_better_challenger_is_promoted():
    verdict = decide(scores(0.80), scores(0.70), CFG)
    assert verdict.promote
    assert "beats the champion" in verdict.reason


def test_better_by_less_than_the_margin_is_refused():
    verdict = decide(scores(0.71), scores(0.70), CFG)
    assert not verdict.promote
    assert "beats_champion:macro_f1: 0.7100 < 0.7200" in verdict.reason


def test_worse_challenger_is_refused():
    assert not decide(scores(0.60), scores(0.70), CFG).promote


def test_a_missing_metric_fails_its_check():
    verdict = decide({"macro_f1": 0.9}, None, CFG)
    assert not verdict.promote
    assert "floor:accuracy: metric missing" in verdict.reason
