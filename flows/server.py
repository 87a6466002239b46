"""A local Prefect server in a child process: what `make ui` runs, for tests and benchmarks to start too."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from data_checks.io import DoclifeError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def local_server(home: Path, port: int | None = None, timeout: float = 180) -> Iterator[str]:
    """Run `prefect server start` on 127.0.0.1 with its SQLite database under `home`; yield its URL."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    home.mkdir(parents=True, exist_ok=True)
    # The UI asks the API at PREFECT_UI_API_URL, which otherwise names the default port 4200.
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_API_URL": f"{url}/api"}
    prefect = Path(sys.executable).parent / "prefect"
    with (home / "server.log").open("w") as log:
        server = subprocess.Popen([str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    tail = (home / "server.log").read_text()[-1500:]
                    raise DoclifeError(f"{home / 'server.log'}: Prefect server did not start: {tail!r}") from None
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
