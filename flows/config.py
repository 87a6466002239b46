"""`params.yaml` → typed configs, one per stage; the only place values come from."""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_checks.clean import CleanConfig
from data_checks.config import EngineConfig, IngestConfig, SampleConfig, SnapshotConfig, ValidateConfig
from data_checks.io import DoclifeError, atomic_path, first_line
from data_checks.sources import require_trackable
from flows.policy import PromoteConfig  # the promote section lives with the gate
from lightning_modules.config import EvaluateConfig, FinetuneConfig, PretrainConfig, TokenizeConfig


@dataclass(frozen=True)
class ScheduleConfig:
    cron: str = "0 2 * * *"
    """When the scheduled lifecycle runs (cron syntax)."""
    timezone: str = "UTC"
    """The time zone the cron expression is read in (IANA name)."""
    watch_every_seconds: int = 300
    """How often the watcher deployment checks whether the source corpus changed."""
    heartbeat_seconds: int = 30
    """How often a served run reports that its process is alive; one silent for three beats is marked Crashed."""

    def __post_init__(self) -> None:
        if len(self.cron.split()) != 5:
            raise ValueError(f"cron {self.cron!r} must have five fields (minute hour day month weekday)")
        if self.watch_every_seconds < 10:
            raise ValueError("watch_every_seconds must be >= 10")
        if self.heartbeat_seconds < 30:
            raise ValueError("heartbeat_seconds must be >= 30 (Prefect's shortest heartbeat interval)")


@dataclass(frozen=True)
class Params:
    """Every stage's configuration, as read from one `params.yaml`."""

    engine: EngineConfig
    sample: SampleConfig
    ingest: IngestConfig
    clean: CleanConfig
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

    # YAML 1.2's numbers, as DVC reads params.yaml: `3e-4` is a float (PyYAML's YAML 1.1 makes it a string).
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
                                 list("-+0123456789."))
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader) or {}
    except FileNotFoundError:
        raise DoclifeError(f"{path}: no such file (run doclife from the workspace root)") from None
    except yaml.YAMLError as exc:
        raise DoclifeError(f"{path}: not valid YAML ({first_line(exc)})") from None
    sections = {}
    for name, cls in typing.get_type_hints(Params).items():
        try:
            sections[name] = _build(cls, raw.get(name) or {})
        except (TypeError, ValueError) as exc:
            raise DoclifeError(f"{path}: section {name!r}: {exc}") from None
    unknown = set(raw) - set(sections)
    if unknown:
        raise DoclifeError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}")
    try:
        require_trackable(sections["ingest"].source)
    except DoclifeError as exc:
        raise DoclifeError(f"{path}: ingest.source {exc}") from None
    return Params(**sections)


def _build(cls: type, values: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}")
    return cls(**values)


def round_trip_yaml() -> Any:
    """A ruamel YAML that rewrites params.yaml keeping its comments, order and quoting."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a long line
    # Write null as `null`, as people write it, not as an empty value.
    yaml.representer.add_representer(type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml


def set_param(path: Path | str, dotted_key: str, value: Any) -> None:
    """Set one key of `params.yaml` in place, keeping its comments and order (ruamel round-trip)."""
    yaml = round_trip_yaml()
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

