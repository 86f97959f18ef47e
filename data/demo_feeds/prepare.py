"""Write the demo feeds' sample files: one feed per format, no internet needed.

Run from the repository root after the demo generator or the tree changes:

    .venv/bin/python data/demo_feeds/prepare.py

The files are committed. Each continues the demo data (tracker.demo) past its end, to
the quarter ending AS_OF, for places that report the measure in the demo: the figures
are synthetic like the rest of the demo and say so in their notes and titles. Two rows of
the CSV feed are wrong on purpose, so the /feeds page has rejections to show.
"""

import json
import random
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from tracker.demo import NOTE, TITLE_PREFIX, demo_observations, report_dates
from tracker.places import read_streets
from tracker.tree import load_tree

HERE = Path(__file__).resolve().parent
TREE = HERE.parent.parent / "results_tree.yaml"
FIRST = date(2020, 1, 1)
AS_OF = date(2026, 9, 30)  # the last quarter end the files report
SEED = 2026
CITY = ZoneInfo("Pacific/Auckland")


def latest_values(tree, measure_id: str) -> dict[str, float]:
    """Each reporting place's last demo value of a measure."""
    latest: dict[str, tuple[str, float]] = {}
    for rows in demo_observations(tree).values():
        for row in rows:
            if row["measure"] == measure_id and row["date"] >= latest.get(row["place"], ("",))[0]:
                latest[row["place"]] = (row["date"], row["value"])
    return {place: value for place, (_, value) in latest.items()}


def level_series(start: dict[str, float], target: float, rng: random.Random):
    """(place, quarter end, value): each place drifts from its last value towards target."""
    for place in sorted(start):
        value = start[place]
        for when in report_dates("quarterly", FIRST, AS_OF):
            value += (target - value) * 0.15 + rng.gauss(0, 0.5)
            yield place, when, round(min(max(value, 0.0), 100.0), 1)


def road_condition_csv(tree, rng: random.Random) -> str:
    """NZTA: % of road in good condition, by suburb name in capitals (as the source has)."""
    names = {b.id: b.name.upper() for b in tree.boundaries}
    lines = ["suburb,quarter_end,percent_good,note"]
    for place, when, value in level_series(latest_values(tree, "road-condition-good"), 85, rng):
        lines.append(f"{names[place]},{when},{value},{NOTE}")
    # Wrong on purpose: a misspelt suburb and a value that is not a number.
    lines.insert(5, f"SYDENHM,{AS_OF},84.0,{NOTE}")
    lines.insert(9, f"{names['sydenham']},{AS_OF},n/a,{NOTE}")
    return "\n".join(lines) + "\n"


def facilities_json(tree, rng: random.Random) -> dict:
    """CCC: % of community facilities open, under data.records with the council's names."""
    start = latest_values(tree, "community-facilities-open")
    records = [
        {"area_unit": place, "period_end": str(when), "percent_open": value, "note": NOTE}
        for place, when, value in level_series(start, 100, rng)
    ]
    return {"meta": {"publisher": "Christchurch City Council (demo)"}, "data": {"records": records}}


def benefit_pages(tree, rng: random.Random, size: int = 1000) -> list[dict]:
    """MSD: main benefit rate as CKAN datastore_search answers, `size` records a page."""
    start = latest_values(tree, "main-benefit-rate")
    records = [
        # CKAN gives timestamp columns with a time and numeric columns as text.
        {"_id": n, "area_unit": p, "quarter_end": f"{w}T00:00:00", "rate": str(v), "note": NOTE}
        for n, (p, w, v) in enumerate(level_series(start, 7.5, rng), 1)
    ]
    fields = [
        {"id": "_id", "type": "int"},
        {"id": "area_unit", "type": "text"},
        {"id": "quarter_end", "type": "timestamp"},
        {"id": "rate", "type": "numeric"},
        {"id": "note", "type": "text"},
    ]
    return [
        {
            "success": True,
            "result": {
                "resource_id": "demo-main-benefit-rate",
                "fields": fields,
                "records": records[offset : offset + size],
                "offset": offset,
                "limit": size,
                "total": len(records),
            },
        }
        for offset in range(0, len(records), size)
    ]


def works(tree, streets, measure_places: set[str], code: str, title: str, rng, count: int):
    """`count` works on streets inside `measure_places`, seen as of AS_OF."""
    candidates = sorted(
        (s for s in streets if s.place_ids and set(s.place_ids) <= measure_places),
        key=lambda s: s.id,
    )
    chosen = rng.sample(candidates, count)
    for index, street in enumerate(chosen, 1):
        line = max(street.geometry.geoms, key=lambda g: g.length).simplify(1e-4)
        planned_start = date.fromordinal(AS_OF.toordinal() + rng.randint(-500, 300))
        planned_end = date.fromordinal(planned_start.toordinal() + rng.randint(60, 300))
        work = {
            "ref": f"{code}-{index:04d}",
            "title": f"{TITLE_PREFIX}{title}, {street.name}",
            "coordinates": [[round(x, 6), round(y, 6)] for x, y in line.coords],
            "planned_start": planned_start,
            "planned_end": planned_end,
            "actual_start": None,
            "actual_end": None,
            "status": "planned",
        }
        if planned_start <= AS_OF:
            work.update(status="in_progress", actual_start=planned_start)
        if planned_end <= AS_OF:
            work.update(status="complete", actual_end=planned_end)
        yield work


def footpaths_geojson(tree, streets, rng) -> dict:
    """CCC: footpath renewals as GeoJSON features with the work id as the feature id."""
    places = set(next(m for m in tree.measures() if m.id == "community-facilities-open").places)
    features = [
        {
            "type": "Feature",
            "id": w["ref"],
            "properties": {
                "description": w["title"],
                "state": w["status"],
                **{k: str(w[k]) if w[k] else None for k in _DATES},
            },
            "geometry": {"type": "LineString", "coordinates": w["coordinates"]},
        }
        for w in works(tree, streets, places, "ccc-fp", "Footpath renewal", rng, 24)
    ]
    return {"type": "FeatureCollection", "features": features}


_DATES = ("planned_start", "planned_end", "actual_start", "actual_end")
_ESRI_DATES = {"planned_start": "PlanStart", "planned_end": "PlanEnd",
               "actual_start": "ActStart", "actual_end": "ActEnd"}  # fmt: skip


def epoch_ms(day: date | None) -> int | None:
    """Midnight in Christchurch as ArcGIS stores it: milliseconds since 1970, UTC."""
    if day is None:
        return None
    midnight = datetime(day.year, day.month, day.day, tzinfo=CITY)
    return int(midnight.astimezone(UTC).timestamp() * 1000)


def safety_pages(tree, streets, rng, size: int = 10) -> list[dict]:
    """NZTA: safety improvements as Esri JSON query answers, `size` features a page."""
    places = set(next(m for m in tree.measures() if m.id == "road-condition-good").places)
    features = [
        {
            "attributes": {
                "OBJECTID": n,
                "WorkRef": w["ref"],
                "Description": w["title"],
                "Status": w["status"],
                **{_ESRI_DATES[k]: epoch_ms(w[k]) for k in _DATES},
            },
            "geometry": {"paths": [w["coordinates"]]},
        }
        for n, w in enumerate(works(tree, streets, places, "nzta-si", "Safety improvements",
                                    rng, 25), 1)
    ]  # fmt: skip
    fields = [
        {"name": "OBJECTID", "type": "esriFieldTypeOID"},
        {"name": "WorkRef", "type": "esriFieldTypeString"},
        {"name": "Description", "type": "esriFieldTypeString"},
        {"name": "Status", "type": "esriFieldTypeString"},
        *({"name": name, "type": "esriFieldTypeDate"} for name in _ESRI_DATES.values()),
    ]
    pages = []
    for offset in range(0, len(features), size):
        page = {
            "objectIdFieldName": "OBJECTID",
            "geometryType": "esriGeometryPolyline",
            "spatialReference": {"wkid": 4326, "latestWkid": 4326},
            "fields": fields,
            "features": features[offset : offset + size],
        }
        if offset + size < len(features):
            page["exceededTransferLimit"] = True
        pages.append(page)
    return pages


def write_pages(folder: Path, pages: list[dict]) -> None:
    """Save a paged answer as page-1.json … (what a `file:` URL of a paged format reads)."""
    folder.mkdir(exist_ok=True)
    for old in folder.glob("page-*.json"):
        old.unlink()
    for number, page in enumerate(pages, 1):
        (folder / f"page-{number}.json").write_text(json.dumps(page, ensure_ascii=False))


def main() -> None:
    tree = load_tree(TREE)
    streets = read_streets(tree.places.streets, tree.boundaries)
    rng = random.Random(SEED)
    (HERE / "nzta-road-condition.csv").write_text(road_condition_csv(tree, rng))
    (HERE / "ccc-facilities.json").write_text(json.dumps(facilities_json(tree, rng)))
    write_pages(HERE / "msd-benefit-rate", benefit_pages(tree, rng))
    (HERE / "ccc-footpaths.geojson").write_text(
        json.dumps(footpaths_geojson(tree, streets, rng), ensure_ascii=False)
    )
    write_pages(HERE / "nzta-safety-works", safety_pages(tree, streets, rng))


if __name__ == "__main__":
    main()
