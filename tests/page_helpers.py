"""Helpers for page tests: store rows through the one write path, and read pages as HTML."""

import json
import re

from bs4 import BeautifulSoup
from sqlmodel import Session

from tracker.submissions import submit_observations, submit_works


def store(app, agency: str, *, observations=(), works=()) -> None:
    """Submit rows as `agency` through the write path and commit, as another process would."""
    with Session(app.extensions["engine"]) as session:
        if observations:
            submit_observations(session, agency_id=agency, rows=list(observations), channel="api")
        if works:
            submit_works(session, agency_id=agency, rows=list(works), channel="api")
        session.commit()


def page(client, url: str, status: int = 200) -> BeautifulSoup:
    """GET `url`, check its status, and parse it."""
    response = client.get(url)
    assert response.status_code == status, response.get_data(as_text=True)[:2000]
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    soup.test_client = client  # map_scripts fetches the page's map scripts with it
    return soup


def map_scripts(soup: BeautifulSoup) -> list[str]:
    """The scripts that draw the page's maps (each loaded from the page's own address with
    ?map=KIND, see tracker/web/page_cache.py), fetched with the client that got the page."""
    scripts = []
    for tag in soup.find_all("script", src=True):
        if "map=" in tag["src"]:
            response = soup.test_client.get(tag["src"])
            assert response.status_code == 200, tag["src"]
            assert response.mimetype == "text/javascript"
            scripts.append(response.get_data(as_text=True))
    return scripts


def text(element) -> str:
    """An element's text with runs of whitespace as single spaces."""
    return re.sub(r"\s+", " ", element.get_text(" ")).strip()


def map_features(script: str) -> list[dict]:
    """Every GeoJSON feature a map script adds to its layers."""
    decoder = json.JSONDecoder()
    features = []
    for match in re.finditer(r"_add\(", script):
        collection, _ = decoder.raw_decode(script, match.end())
        features.extend(collection["features"])
    return features


def forget_pages(app) -> None:
    """Drop the app's cached pages and maps, as the next day would (they are kept per
    data stamp and day): for tests that age a row in place instead of waiting weeks."""
    from tracker.web import page_cache

    page_cache.init_app(app)
