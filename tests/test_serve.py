"""`tracker serve` runs a real gunicorn server that answers pages and the API."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

TRACKER = Path(sys.executable).parent / "tracker"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(settings, loaded):
    port = _free_port()
    env = {
        **os.environ,
        "TRACKER_DATABASE_URL": settings.database_url,
        "TRACKER_TREE": str(settings.tree),
        "TRACKER_INSTANCE_PATH": str(settings.instance_path),
        "TRACKER_SECRET_KEY": "test-secret",
    }
    process = subprocess.Popen(
        [str(TRACKER), "serve", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            requests.get(base + "/api/openapi.json", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.2)
    yield base
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=20)
    process.stdout.close()


def test_serve_answers_pages_and_api(server):
    page = requests.get(server + "/", timeout=5)
    assert page.status_code == 200
    assert "Ōpāwa" in page.text
    assert "Content-Security-Policy" in page.headers
    places = requests.get(server + "/api/v1/places", timeout=5).json()
    assert len(places["features"]) == 7
