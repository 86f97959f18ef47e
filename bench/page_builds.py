"""How long a page takes to build on its first view, and how many questions it asks the
database: random street pages (or any other kind) of a loaded city, in one process,
through Flask's test client (no HTTP, no other load).

    .venv/bin/python bench/page_builds.py --database sqlite:////tmp/demo/tracker.sqlite3
    .venv/bin/python bench/page_builds.py --database postgresql+psycopg://…/demo --count 200
    .venv/bin/python bench/page_builds.py --database … --beside-warmup

The database must hold a city (`tracker demo` into it first); nothing is written. By
default the page allowance is 0, so nothing is built ahead and each page is built in
its request. `--beside-warmup` keeps the default allowance: the first view then starts
the worker's background thread building its pages ahead, and the pages timed share the
interpreter with it, as in a worker just started.
"""

import argparse
import os
import random
import statistics
import time

from sqlalchemy import event, text

PATHS = {"street": ("SELECT id FROM street", "/streets/{}")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", required=True, help="SQLAlchemy URL of a loaded city")
    parser.add_argument("--kind", choices=sorted(PATHS), default="street")
    parser.add_argument("--count", type=int, default=80)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--beside-warmup", action="store_true")
    args = parser.parse_args()
    os.environ["TRACKER_DATABASE_URL"] = args.database
    os.environ.setdefault("TRACKER_MAP_TILES", "")
    if not args.beside_warmup:
        os.environ["TRACKER_PAGE_STALE_SECONDS"] = "0"

    from tracker import create_app

    app = create_app()
    engine = app.extensions["engine"]
    query, address = PATHS[args.kind]
    with engine.connect() as connection:
        ids = connection.execute(text(query)).scalars().all()
    chosen = random.Random(args.seed).sample(ids, min(args.count + 1, len(ids)))
    client = app.test_client()
    client.get(address.format(chosen.pop()))  # imports, templates, the tree: not timed

    asked = [0]
    event.listen(engine, "before_cursor_execute", lambda *_: asked.__setitem__(0, asked[0] + 1))
    times, questions = [], []
    for item in chosen:
        asked[0] = 0
        started = time.perf_counter()
        answer = client.get(address.format(item))
        times.append((time.perf_counter() - started) * 1000)
        questions.append(asked[0])
        assert answer.status_code == 200, (item, answer.status_code)
    times.sort()
    print(
        f"{len(times)} {args.kind} pages on {engine.dialect.name}"
        f"{' beside the warm-up' if args.beside_warmup else ''}: "
        f"median {statistics.median(times):.1f} ms, p90 {times[int(0.9 * len(times))]:.1f} ms, "
        f"max {times[-1]:.1f} ms; questions to the database a page: median "
        f"{statistics.median(questions):.0f}, max {max(questions)}"
    )
    app.extensions["page_rebuilder"].wait(60)


if __name__ == "__main__":
    main()
