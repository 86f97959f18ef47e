"""`tracker demo` loads the real Christchurch city through the one write path."""

from pathlib import Path

import pytest
from shapely.geometry import shape
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
    assert counts["ObservationRevision"] == 0  # each demo value is sent once: none replaced
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
    client = app.test_client()
    page = client.get("/").get_data(as_text=True)
    api_docs = client.get("/api/docs").get_data(as_text=True)
    places = client.get("/api/v1/places").get_json()
    opawa = client.get("/api/v1/streets?q=%C5%8Cp%C4%81wa").get_json()
    riccarton = client.get("/api/v1/streets?q=riccarton%20av").get_json()
    agency = client.get("/agencies/ccc").get_data(as_text=True)
    app.extensions["engine"].dispose()
    # Its history arrived all at once: the timeliness table says why every report is late.
    assert 'id="demo-timeliness"' in agency
    assert "Demo data" in page and "Demo data" in api_docs  # its examples are demo rows too
    assert "Dallington" in page
    levels = [f["properties"]["level"] for f in places["features"]]
    assert levels.count("city") == 1 and levels.count("neighbourhood") == 126
    assert all(shape(f["geometry"]).is_valid for f in places["features"])
    assert "Opawa Road" in [s["name"] for s in opawa]
    assert riccarton[0]["name"] == "Riccarton Avenue"
