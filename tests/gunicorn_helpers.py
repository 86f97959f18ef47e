"""A real gunicorn for the tests: deploy/gunicorn.conf.py serving the test's database on a
free loopback port, its log in the test's folder, stopped when the test is done."""

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
from smtp_helpers import free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Served:
    process: subprocess.Popen  # the master
    base: str  # http://127.0.0.1:PORT
    log: Path  # the master's and workers' output

    def workers(self) -> list[int]:
        """The worker processes (the master's children)."""
        found = []
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            found += [int(pid) for pid in (task / "children").read_text().split()]
        return found

    def up(self) -> bool:
        try:
            return requests.get(self.base + "/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False


def tracker_env(settings) -> dict[str, str]:
    """The environment of a tracker process (web server, CLI) on the test's database."""
    return os.environ | {
        "TRACKER_DATABASE_URL": settings.database_url,
        "TRACKER_TREE": str(settings.tree),
        "TRACKER_INSTANCE_PATH": str(settings.instance_path),
        "TRACKER_SECRET_KEY": "test-secret",
    }


@contextlib.contextmanager
def gunicorn(settings, tmp_path: Path, *, workers: int = 2, **env: str) -> Iterator[Served]:
    """Start gunicorn with `workers` workers and the extra environment `env`; yield once
    /healthz answers and every worker has booted (a request answered by the first alone
    would let a test miss the second)."""
    port = free_port()
    environment = tracker_env(settings) | {
        "TRACKER_GUNICORN_BIND": f"127.0.0.1:{port}",
        "TRACKER_GUNICORN_WORKERS": str(workers),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        **env,
    }
    log = tmp_path / "gunicorn.log"
    command = [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "wsgi:app"]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=sink, stderr=sink)
    served = Served(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 30
        while log.read_text().count("Booting worker") < workers or not served.up():
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield served
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
