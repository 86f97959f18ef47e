"""Derive the project's Christchurch files from the open-data downloads.

Run once, from the repository root, after fetching the sources (see SOURCES.md):

    .venv/bin/python data/christchurch/prepare.py SOURCE_DIR

SOURCE_DIR is the folder holding the downloads. The outputs are committed, so a fresh
clone never needs the sources.
"""

import json
import sys
from pathlib import Path

from tracker.text import slugify

HERE = Path(__file__).resolve().parent
AREA_UNITS = "christchurch_area_units_2013.geojson"
ROADS = "christchurch_roads_topo50.geojson"


def neighbourhoods(source: dict) -> dict:
    """Stats NZ Area Units as neighbourhoods: slug id, name, code and label point."""
    features = []
    for feature in source["features"]:
        props = feature["properties"]
        name = props["AU2013_NAM"]
        features.append(
            {
                "type": "Feature",
                "properties": {
                    "id": slugify(name),
                    "name": name,
                    "au2013": props["AU2013"],
                    "label_lon": props["label_lon"],
                    "label_lat": props["label_lat"],
                },
                "geometry": _rounded(feature["geometry"]),
            }
        )
    ids = [f["properties"]["id"] for f in features]
    if len(set(ids)) != len(ids):
        raise SystemExit("two Area Unit names give the same id")
    features.sort(key=lambda f: f["properties"]["id"])
    return {"type": "FeatureCollection", "features": features}


def streets(source: dict) -> dict:
    """LINZ road centrelines that carry a name (unnamed ones are driveways, tracks …)."""
    features = [
        {
            "type": "Feature",
            "properties": {"name": f["properties"]["name"], "t50_fid": f["properties"]["t50_fid"]},
            "geometry": _rounded(f["geometry"]),
        }
        for f in source["features"]
        if f["properties"].get("name", "").strip()
    ]
    features.sort(key=lambda f: f["properties"]["t50_fid"])
    return {"type": "FeatureCollection", "features": features}


def _rounded(geometry: dict) -> dict:
    """The geometry with coordinates at 6 decimals: the grid the sources are already on."""

    def walk(value):
        if isinstance(value, list):
            return [walk(v) for v in value]
        return round(value, 6)

    return {"type": geometry["type"], "coordinates": walk(geometry["coordinates"])}


def _read(path: Path) -> dict:
    """A GeoJSON source file."""
    return json.loads(path.read_text(encoding="utf-8"))


def _write(path: Path, collection: dict) -> None:
    """Compact UTF-8 GeoJSON: one line, no indentation."""
    text = json.dumps(collection, ensure_ascii=False, separators=(",", ":"))
    path.write_text(text + "\n", encoding="utf-8")
    print(f"{path.name}: {len(collection['features'])} features, {len(text) // 1024} KB")


def main(argv: list[str]) -> None:
    """Read the sources and write neighbourhoods.geojson and streets.geojson next to this file."""
    if len(argv) != 2:
        sys.exit(f"usage: {argv[0]} SOURCE_DIR")
    source = Path(argv[1])
    _write(HERE / "neighbourhoods.geojson", neighbourhoods(_read(source / AREA_UNITS)))
    _write(HERE / "streets.geojson", streets(_read(source / ROADS)))


if __name__ == "__main__":
    main(sys.argv)
