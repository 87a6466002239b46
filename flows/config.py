"""`params.yaml` → typed configs, one per stage; the only place values come from."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_checks.config import IngestConfig, SampleConfig, SnapshotConfig, ValidateConfig
from data_checks.io import DoclifeError, atomic_path
from lightning_modules.config import EvaluateConfig, FinetuneConfig, PretrainConfig, TokenizeConfig

METRIC_NAMES = ("accuracy", "macro_f1", "roc_auc")


@dataclass(frozen=True)
class PromoteConfig:
    primary_metric: str = "macro_f1"
    """The metric the challenger must improve on the champion; one of accuracy, macro_f1, roc_auc."""
    min_improvement: float = 0.01
    """How much the challenger's primary metric must exceed the champion's, on the same test snapshot."""
    floors: dict[str, float] = field(default_factory=lambda: {"macro_f1": 0.5, "accuracy": 0.5})
    """Absolute lower bounds, metric → value, that every promoted model must reach (the first one too)."""
    registry: str = "registry"
    """Directory of the model registry (versions, aliases, decision history), relative to the workspace."""

    def __post_init__(self) -> None:
        for name in (self.primary_metric, *self.floors):
            if name not in METRIC_NAMES:
                raise ValueError(f"unknown metric {name!r}; expected one of {', '.join(METRIC_NAMES)}")
        if self.min_improvement < 0:
            raise ValueError("min_improvement must be >= 0")


@dataclass(frozen=True)
class ScheduleConfig:
    cron: str = "0 2 * * *"
    """When the scheduled lifecycle runs (cron syntax)."""
    timezone: str = "UTC"
    """The time zone the cron expression is read in (IANA name)."""
    watch_every_seconds: int = 300
    """How often the watcher deployment checks whether the source corpus changed."""

    def __post_init__(self) -> None:
        if len(self.cron.split()) != 5:
            raise ValueError(f"cron {self.cron!r} must have five fields (minute hour day month weekday)")
        if self.watch_every_seconds < 10:
            raise ValueError("watch_every_seconds must be >= 10")


@dataclass(frozen=True)
class Params:
    """Every stage's configuration, as read from one `params.yaml`."""

    sample: SampleConfig
    ingest: IngestConfig
    validate: ValidateConfig
    snapshot: SnapshotConfig
    tokenize: TokenizeConfig
    pretrain: PretrainConfig
    finetune: FinetuneConfig
    evaluate: EvaluateConfig
    promote: PromoteConfig
    schedule: ScheduleConfig


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and check `params.yaml`; a wrong key or value is a one-line error naming the file."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise DoclifeError(f"{path}: no such file (run doclife from the workspace root)") from None
    except yaml.YAMLError as exc:
        raise DoclifeError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    sections = {}
    for name, cls in typing.get_type_hints(Params).items():
        try:
            sections[name] = _build(cls, raw.get(name) or {})
        except (TypeError, ValueError) as exc:
            raise DoclifeError(f"{path}: section {name!r}: {exc}") from None
    unknown = set(raw) - set(sections)
    if unknown:
        raise DoclifeError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}")
    return Params(**sections)


def _build(cls: type, values: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}")
    return cls(**values)


def set_param(path: Path | str, dotted_key: str, value: Any) -> None:
    """Set one key of `params.yaml` in place, keeping its comments and order (ruamel round-trip)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    # Write null as `null`, as people write it, not as an empty value.
    yaml.representer.add_representer(type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    path = Path(path)
    data = yaml.load(path.read_text(encoding="utf-8"))
    *parents, leaf = dotted_key.split(".")
    node = data
    for key in parents:
        node = node[key]
    if node.get(leaf) == value:
        return
    node[leaf] = value
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        yaml.dump(data, fh)

