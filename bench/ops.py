"""Operations benchmark (`make bench-ops`): a full lifecycle run and a no-change run against a running server.

Clones the repository (committed state) into a temporary workspace, starts a local Prefect server, runs
`doclife run` twice on the built-in sample corpus and reports, for each run, the command's wall time, the
flow's own wall time and the sum of its stage tasks' times; their difference is the orchestration overhead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flows.server import local_server

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def timed_run(workspace: Path, api_url: str) -> dict:
    env = {**os.environ, "PREFECT_API_URL": f"{api_url}/api", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    done = subprocess.run([str(BIN / "doclife"), "run"], cwd=workspace, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"doclife run failed: {done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    return {"command_s": round(wall, 1), "flow_s": summary["seconds"]["flow"], "stages_s": summary["seconds"]["stages"],
            "ran": sum(state == "ran" for state in summary["stages"].values())}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="doclife-bench-ops-") as tmp:
        workspace = Path(tmp) / "ws"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(workspace)], check=True)
        with local_server(Path(tmp) / "prefect") as url:
            full, unchanged = timed_run(workspace, url), timed_run(workspace, url)
    print("| run | stages ran | `doclife run` wall | flow wall | stage tasks | orchestration overhead |")
    print("|---|---|---|---|---|---|")
    for name, r in (("full lifecycle (sample corpus)", full), ("nothing changed", unchanged)):
        overhead = r["flow_s"] - r["stages_s"]
        print(f"| {name} | {r['ran']} | {r['command_s']} s | {r['flow_s']} s | {r['stages_s']} s | "
              f"{overhead:.1f} s ({100 * overhead / max(r['flow_s'], 1e-9):.0f}% of the flow) |")


if __name__ == "__main__":
    main()
