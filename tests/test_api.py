"""The read API of the foundation: places, streets, and the OpenAPI document."""

from openapi_spec_validator import validate
from shapely.geometry import shape


def test_places_is_valid_geojson_of_every_place(client):
    answer = client.get("/api/v1/places")
    assert answer.status_code == 200
    collection = answer.get_json()
    assert collection["type"] == "FeatureCollection"
    by_id = {f["id"]: f for f in collection["features"]}
    assert set(by_id) == {
        "tiny",
        "heathcote",
        "central",
        "opawa",
        "st-albans",
        "riccarton",
        "red-zone-park",
    }
    levels = sorted(f["properties"]["level"] for f in collection["features"])
    assert levels == ["area", "area", "city"] + ["neighbourhood"] * 4
    for feature in collection["features"]:
        assert feature["type"] == "Feature"
        assert set(feature["properties"]) >= {"id", "name", "level", "parent"}
        assert shape(feature["geometry"]).is_valid
    assert by_id["opawa"]["properties"]["name"] == "Ōpāwa"
    assert by_id["tiny"]["properties"]["parent"] is None


def test_neighbourhoods_hang_from_their_area(client):
    features = client.get("/api/v1/places").get_json()["features"]
    parents = {f["id"]: f["properties"]["parent"] for f in features}
    areas = {f["id"] for f in features if f["properties"]["level"] == "area"}
    assert parents["opawa"] == parents["st-albans"]
    assert parents["opawa"] in areas
    assert all(parents[a] == "tiny" for a in areas)


def test_streets_search_ignores_macrons_and_case(client):
    names = [s["name"] for s in client.get("/api/v1/streets?q=opawa").get_json()]
    assert "Ōpāwa Road" in names or "Opawa Road" in names
    macron = client.get("/api/v1/streets?q=%C5%8Cp%C4%81wa").get_json()
    assert [s["id"] for s in macron] == [
        s["id"] for s in client.get("/api/v1/streets?q=OPAWA").get_json()
    ]


def test_streets_search_matches_word_starts(client):
    found = client.get("/api/v1/streets?q=riccarton%20av").get_json()
    assert found[0]["name"] == "Riccarton Avenue"
    assert found[0]["places"]
    assert client.get("/api/v1/streets?q=arton").get_json() == []
    # The contract's rule exactly: abbreviations are for residents' pages, not the API.
    assert client.get("/api/v1/streets?q=opawa%20rd").get_json() == []


def test_streets_search_refuses_unknown_and_missing_parameters(client):
    missing = client.get("/api/v1/streets")
    assert missing.status_code == 400
    assert "'q'" in missing.get_json()["error"]
    unknown = client.get("/api/v1/streets?q=x&colour=red")
    assert unknown.status_code == 400
    assert "colour" in unknown.get_json()["error"]


def test_openapi_document_is_valid_and_describes_every_route(app, client):
    document = client.get("/api/openapi.json").get_json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    served = {
        rule.rule.replace("<", "{").replace(">", "}")
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/")
    }
    assert served and served <= set(document["paths"])
    streets = document["paths"]["/api/v1/streets"]["get"]
    assert [p["name"] for p in streets["parameters"]] == ["q"]
    assert "400" in streets["responses"]
