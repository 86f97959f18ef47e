"""Public pages benchmark: throughput against a bare Flask endpoint, the city map's size,
and what a slow phone sees (Largest Contentful Paint and bytes transferred).

    .venv/bin/python bench/pages.py                        # SQLite demo city
    .venv/bin/python bench/pages.py --backend postgresql   # a throwaway PostgreSQL database
    .venv/bin/python bench/pages.py --skip-browser --seconds 5

1. Throughput: the demo city (`tracker demo`) served by gunicorn with 2 workers on
   127.0.0.1, and in the same run a bare Flask endpoint (bench/bare_app.py, one line of
   text) on gunicorn with 2 workers too; `wrk -t2 -c16` for --seconds against each page
   and the bare endpoint, after one warming request. wrk shares the machine's cores.
2. Map size: the city page's map (its <div> and its script) against the compact GeoJSON
   (no spaces) of exactly the features and properties the script embeds.
3. Slow phone: Debian's Chromium, headless, cold cache, each page loaded with the usual
   mobile lab profile through the DevTools protocol (1.6 Mbps down, 750 kbps up, 150 ms
   round trip, CPU slowed 4×); LCP from a PerformanceObserver, bytes from the Resource
   Timing entries (compressed sizes as sent; no map tiles: TRACKER_MAP_TILES is empty).
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SLOW_PHONE = {"latency": 150, "down_bps": 1_600_000, "up_bps": 750_000, "cpu": 4}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def gunicorn(app: str, env: dict[str, str], cwd: Path):
    """gunicorn -w 2 serving `app` on 127.0.0.1; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [BIN / "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "--no-control-socket", app],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/", timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def wrk(url: str, seconds: int) -> dict[str, float]:
    """requests/s, p99 latency (ms) and errors of `wrk -t2 -c16` against `url`."""
    urllib.request.urlopen(url, timeout=30).read()  # warm: build the page once
    out = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1, "s": 1000}[p99[2]]
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(match[1])
    if match := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    ):
        errors += sum(int(n) for n in match.groups())
    return {"rps": rate, "p99_ms": float(p99[1]) * scale, "errors": errors}


def get(url: str) -> str:
    return urllib.request.urlopen(url, timeout=30).read().decode()


def pick_pages(base: str) -> dict[str, str]:
    """The city, a neighbourhood with works, and a street with works in the demo city."""
    features = json.loads(get(base + "/api/v1/places"))["features"]
    place = next(f["id"] for f in features if f["properties"]["level"] == "neighbourhood")
    for candidate in ("riccarton", "linwood", "sydenham"):
        if any(f["id"] == candidate for f in features):
            place = candidate
            break
    street = json.loads(get(base + "/api/v1/streets?q=riccarton+road"))[0]["id"]
    return {"city": "/", "place": f"/places/{place}", "street": f"/streets/{street}"}


def map_size(base: str) -> dict[str, float]:
    """The city map's bytes (div + script) against the compact GeoJSON it embeds."""
    html = get(base + "/")
    div = re.search(r'<div[^>]*class="folium-map"[^>]*></div>', html)[0]
    src = re.search(r'<script defer src="(/\?map=[^"]+)"', html)[1].replace("&amp;", "&")
    script = get(base + src)
    decoder = json.JSONDecoder()
    embedded = []
    for match in re.finditer(r"_add\(", script):
        collection, _ = decoder.raw_decode(script, match.end())
        embedded.append(collection)
    compact = len(json.dumps(embedded, separators=(",", ":"), ensure_ascii=False).encode())
    size = len(div.encode()) + len(script.encode())
    return {"map_bytes": size, "geojson_bytes": compact, "ratio": size / compact}


LCP_OBSERVER = """
window.__lcp = 0;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__lcp = entry.startTime;
}).observe({type: "largest-contentful-paint", buffered: true});
"""

TRANSFER = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const resources = performance.getEntriesByType("resource");
  return {
    bytes: nav.transferSize + resources.reduce((sum, r) => sum + r.transferSize, 0),
    requests: 1 + resources.length,
    outside: resources.filter((r) => !r.name.startsWith(location.origin)).length,
  };
}"""


def slow_phone(base: str, pages: dict[str, str]) -> dict[str, dict]:
    """LCP (ms) and transfer (bytes) of each page, cold cache, on the slow-phone profile."""
    from playwright.sync_api import sync_playwright

    results = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for name, path in pages.items():
            context = browser.new_context(viewport={"width": 360, "height": 740})
            context.add_init_script(LCP_OBSERVER)
            page = context.new_page()
            cdp = context.new_cdp_session(page)
            cdp.send("Network.enable")
            cdp.send(
                "Network.emulateNetworkConditions",
                {
                    "offline": False,
                    "latency": SLOW_PHONE["latency"],
                    "downloadThroughput": SLOW_PHONE["down_bps"] / 8,
                    "uploadThroughput": SLOW_PHONE["up_bps"] / 8,
                },
            )
            cdp.send("Emulation.setCPUThrottlingRate", {"rate": SLOW_PHONE["cpu"]})
            page.goto(base + path, wait_until="load")
            page.wait_for_timeout(1500)  # let the map draw and LCP settle
            transfer = page.evaluate(TRANSFER)
            results[name] = {"lcp_ms": page.evaluate("window.__lcp"), **transfer}
            context.close()
        browser.close()
    return results


def demo_database(backend: str, folder: Path) -> tuple[str, callable]:
    """A database URL holding the demo city, and a function that drops it."""
    env = dict(os.environ, TRACKER_INSTANCE_PATH=str(folder / "instance"))
    if backend == "sqlite":
        url = f"sqlite:///{folder / 'demo.sqlite3'}"
        drop = lambda: None  # noqa: E731 - the folder goes with it
    else:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        name = f"tracker_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(PG_SERVER).set(database=name).render_as_string(hide_password=False)

        def drop():
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            admin.dispose()

    env["TRACKER_DATABASE_URL"] = url
    subprocess.run([BIN / "tracker", "demo"], cwd=ROOT, env=env, check=True)
    return url, drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--skip-browser", action="store_true")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="tracker-bench-pages-"))
    url, drop = demo_database(args.backend, folder)
    env = dict(
        os.environ,
        TRACKER_DATABASE_URL=url,
        TRACKER_INSTANCE_PATH=str(folder / "instance"),
        TRACKER_MAP_TILES="",
        TRACKER_SECURE_COOKIES="false",
    )
    try:
        with gunicorn("bare_app:app", env, ROOT / "bench") as bare_base:
            bare = wrk(bare_base + "/", args.seconds)
        print(f"bare Flask endpoint: {bare['rps']:.0f} req/s, p99 {bare['p99_ms']:.1f} ms")
        with gunicorn("wsgi:app", env, ROOT) as base:
            pages = pick_pages(base)
            for name, path in pages.items():
                figures = wrk(base + path, args.seconds)
                print(
                    f"{name:6} {path}: {figures['rps']:.0f} req/s "
                    f"({figures['rps'] / bare['rps']:.0%} of bare), "
                    f"p99 {figures['p99_ms']:.1f} ms, errors {figures['errors']}"
                )
            size = map_size(base)
            print(
                f"city map: {size['map_bytes']:,} bytes for {size['geojson_bytes']:,} bytes of "
                f"compact GeoJSON: {size['ratio']:.2f}×"
            )
            if not args.skip_browser:
                for name, figures in slow_phone(base, pages).items():
                    print(
                        f"slow phone, {name:6}: LCP {figures['lcp_ms']:.0f} ms, "
                        f"{figures['bytes'] / 1024:.0f} KB in {figures['requests']} requests, "
                        f"{figures['outside']} from outside"
                    )
    finally:
        drop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
