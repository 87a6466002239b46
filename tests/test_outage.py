"""A Prefect server that goes away for half a minute while a lifecycle run is training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from flows.config import set_param
from flows.server import free_port, local_server

BIN = Path(sys.executable).parent


def training_processes(workspace: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["cwd"] == str(workspace) and any(part.endswith("doclife") for part in cmdline[:2]) \
                and "pretrain" in cmdline:
            found.append(proc)
    return found


def server_pid(port: int) -> int:
    return next(conn.pid for conn in psutil.net_connections("tcp")
                if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN)


def doclife_run(workspace: Path, api: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_API_URL": api, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        return subprocess.Popen([str(BIN / "doclife"), "run"], cwd=workspace, env=env, stdout=out, stderr=err)


@pytest.mark.slow
def test_a_server_outage_during_pretrain_neither_fails_the_run_nor_starts_a_second_training(tmp_path,
                                                                                           tiny_workspace):
    workspace = tiny_workspace()
    set_param(workspace / "params.yaml", "pretrain.max_steps", 200)  # long enough to be cut in the middle
    home, port = tmp_path / "prefect-home", free_port()
    with local_server(home, port) as url:
        api = f"{url}/api"
        run = doclife_run(workspace, api, tmp_path / "run")
        deadline = time.monotonic() + 300
        while not training_processes(workspace):
            assert run.poll() is None and time.monotonic() < deadline, (tmp_path / "run.err").read_text()[-2000:]
            time.sleep(0.5)
        psutil.Process(server_pid(port)).kill()  # the server is gone, mid-training
        most_at_once = 0
        for _ in range(30):
            most_at_once = max(most_at_once, len(training_processes(workspace)))
            time.sleep(1)
    assert most_at_once == 1
    with local_server(home, port):  # back, with the same database
        assert run.wait(timeout=600) == 0, (tmp_path / "run.err").read_text()[-3000:]
        first = json.loads((tmp_path / "run.out").read_text())
        assert first["stages"]["pretrain"] == "ran" and first["champion"]["version"] == "v0001"
        # One training process all along: the task was never retried while its stage ran on.
        assert json.loads((workspace / "reports/pretrain/metrics.json").read_text())["resumed_from_step"] is None
        # The next run completes and finds the workspace consistent: nothing to do.
        again = doclife_run(workspace, api, tmp_path / "again")
        assert again.wait(timeout=600) == 0, (tmp_path / "again.err").read_text()[-3000:]
        assert set(json.loads((tmp_path / "again.out").read_text())["stages"].values()) == {"skipped"}
