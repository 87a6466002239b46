"""The registry: immutable versions, the champion alias, the decision history, crash safety."""

from pathlib import Path

import pytest

from flows import registry as registry_module
from flows.registry import Registry


def make_model(path: Path, weights: bytes) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(weights)
    return path


def test_register_copies_the_model_and_numbers_versions(tmp_path):
    reg = Registry(tmp_path / "registry")
    v1 = reg.register(make_model(tmp_path / "a", b"one"), {"data_snapshot": "snap-1"})
    v2 = reg.register(make_model(tmp_path / "b", b"two"), {"data_snapshot": "snap-1"})
    assert (v1["version"], v2["version"]) == ("v0001", "v0002")
    assert (Path(v2["path"]) / "model.safetensors").read_bytes() == b"two"
    assert reg.champion() is None


def test_the_same_model_is_registered_once(tmp_path):
    reg = Registry(tmp_path / "registry")
    first = reg.register(make_model(tmp_path / "a", b"same"), {})
    again = reg.register(make_model(tmp_path / "b", b"same"), {})
    assert again["version"] == first["version"]
    assert len(reg.state()["versions"]) == 1


def test_decisions_move_the_champion_and_are_kept_newest_first(tmp_path):
    reg = Registry(tmp_path / "registry")
    v1 = reg.register(make_model(tmp_path / "a", b"1"), {})["version"]
    v2 = reg.register(make_model(tmp_path / "b", b"2"), {})["version"]
    reg.decide(v1, True, "first model")
    reg.decide(v2, False, "not better")
    assert reg.champion()["version"] == v1
    history = reg.history()
    assert [(e["version"], e["decision"]) for e in history] == [(v2, "rejected"), (v1, "promoted")]
    assert history[0]["champion_before"] == history[0]["champion_after"] == v1


def test_a_crash_while_writing_leaves_the_old_champion(tmp_path, monkeypatch):
    reg = Registry(tmp_path / "registry")
    v1 = reg.register(make_model(tmp_path / "a", b"1"), {})["version"]
    reg.decide(v1, True, "first model")
    v2 = reg.register(make_model(tmp_path / "b", b"2"), {})["version"]

    def crash(path, data):
        Path(str(path) + ".partial").write_text("half")  # what a dying writer might leave behind
        raise OSError("disk full")

    monkeypatch.setattr(registry_module, "write_json", crash)
    with pytest.raises(OSError):
        reg.decide(v2, True, "better")
    assert reg.champion()["version"] == v1


def test_a_version_directory_left_by_a_crash_is_never_reused(tmp_path):
    reg = Registry(tmp_path / "registry")
    (tmp_path / "registry/versions/v0001/model").mkdir(parents=True)  # copied, never recorded
    entry = reg.register(make_model(tmp_path / "a", b"1"), {})
    assert entry["version"] == "v0002"
