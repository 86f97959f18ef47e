"""`tracker demo` loads the real Christchurch city through the one write path."""

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from tracker import create_app
from tracker.cli import main
from tracker.db import make_engine
from tracker.models import Batch, Observation, ObservationRevision, Place, Work

ROOT = Path(__file__).parent.parent


def _counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    with Session(engine) as session:
        counts = {
            model.__name__: session.scalar(select(func.count()).select_from(model))
            for model in (Place, Observation, ObservationRevision, Work)
        }
        counts["demo batches"] = session.scalar(
            select(func.count()).select_from(Batch).where(Batch.channel == "demo")
        )
    engine.dispose()
    return counts


@pytest.mark.slow
def test_demo_loads_idempotently_and_is_labelled(runner, settings, monkeypatch):
    monkeypatch.setenv("TRACKER_TREE", str(ROOT / "results_tree.yaml"))
    first = runner.invoke(main, ["demo"])
    assert first.exit_code == 0, first.output
    counts = _counts(settings.database_url)
    assert counts["Place"] == 127  # the city and 126 Area Units
    assert counts["Observation"] > 50_000
    assert counts["ObservationRevision"] == counts["Observation"]
    assert counts["Work"] > 100
    assert f"{counts['Observation']} observation rows" in first.output

    again = runner.invoke(main, ["demo"])
    assert again.exit_code == 0, again.output
    second = _counts(settings.database_url)
    # the same rows again are recognised as unchanged: no new revisions or works
    assert {k: v for k, v in second.items() if k != "demo batches"} == {
        k: v for k, v in counts.items() if k != "demo batches"
    }

    app = create_app(settings.model_copy(update={"tree": ROOT / "results_tree.yaml"}))
    page = app.test_client().get("/").get_data(as_text=True)
    app.extensions["engine"].dispose()
    assert "Demo data" in page
    assert "Dallington" in page
