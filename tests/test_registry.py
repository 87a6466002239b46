"""The registry: immutable versions, the champion alias, the decision history, crash safety."""

from pathlib import Path

import pytest

from flows import registry as registry_module
from data_checks.io import DoclifeError
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


def champion_of(reg: Registry) -> str | None:
    return reg.state()["aliases"]["champion"]


def three_champions(tmp_path: Path) -> tuple[Registry, list[str]]:
    reg = Registry(tmp_path / "registry")
    names = [reg.register(make_model(tmp_path / f"m{i}", bytes([i])), {})["version"] for i in range(3)]
    for name in names:
        reg.decide(name, True, f"{name} better")
    return reg, names


def test_rollback_walks_back_through_earlier_champions_and_is_recorded(tmp_path):
    reg, (v1, v2, v3) = three_champions(tmp_path)
    event = reg.rollback("v3 misbehaves in production")
    assert (event["decision"], event["champion_before"], event["champion_after"]) == ("rollback", v3, v2)
    assert champion_of(reg) == v2
    reg.rollback()  # a second rollback goes one champion further back, not forth again
    assert champion_of(reg) == v1
    with pytest.raises(DoclifeError, match="no previous champion"):
        reg.rollback()
    assert [e["decision"] for e in reg.history()][:2] == ["rollback", "rollback"]
    assert reg.history()[1]["reason"] == "v3 misbehaves in production"


def test_a_forced_promotion_needs_a_reason_and_is_recorded_as_forced(tmp_path, monkeypatch):
    reg, (v1, v2, v3) = three_champions(tmp_path)
    with pytest.raises(DoclifeError, match="--reason"):
        reg.force(v1, " ")
    monkeypatch.setenv("DOCLIFE_ACTOR", "alice")
    event = reg.force(v1, "hotfix: v3 and v2 mislabel refunds")
    assert (event["decision"], event["actor"], champion_of(reg)) == ("forced", "alice", v1)
    reg.rollback()  # undoes the override
    assert champion_of(reg) == v3
    with pytest.raises(DoclifeError, match="no version 'v0009'"):
        reg.force("v0009", "typo")


def test_history_is_append_only(tmp_path):
    reg, names = three_champions(tmp_path)
    before = reg.state()["history"]
    reg.rollback()
    reg.decide(names[0], False, "not better")
    assert reg.state()["history"][: len(before)] == before


def test_cli_rollback_then_status_and_history_show_it(tmp_path, monkeypatch, capsys):
    import json
    import shutil

    from flows.cli import main

    shutil.copy(Path(__file__).resolve().parents[1] / "params.yaml", tmp_path / "params.yaml")
    reg, (v1, v2, v3) = three_champions(tmp_path)
    monkeypatch.chdir(tmp_path)

    def run(*argv: str):
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    assert run("promote", "--rollback", "--reason", "latency regression")[0] == 0
    code, out, _ = run("status", "--json")
    status = json.loads(out)["champion"]
    assert code == 0 and status["version"] == v2 and Path(status["path"], "config.json").is_file()
    history = json.loads(run("history", "--json")[1])
    assert history[0]["decision"] == "rollback" and history[0]["reason"] == "latency regression"
    assert {"version", "decision", "reason", "time"} <= set(history[0])

    assert run("promote", v3, "--force", "--reason", "rollback was a mistake")[0] == 0
    assert json.loads(run("status", "--json")[1])["champion"]["version"] == v3
    code, _, err = run("promote", v1)  # a version without --force is not a gate run
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1
