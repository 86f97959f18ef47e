"""Search (`/search`): streets with their suburbs, places with their level, one match goes
straight to its page, none suggests near names; the autocomplete is an enhancement."""

import json

import pytest
from page_helpers import page, text

import tracker.web.search


def matches(soup, section: str) -> list[tuple[str, str]]:
    """(href, text) of each match listed in the section."""
    return [
        (li.a["href"], text(li).replace(" ,", ","))
        for li in soup.select(f"#{section} ul.matches li")
    ]


@pytest.mark.parametrize("q", ["opawa", "Ōpāwa", "ŌPĀWA", "ōpawa"])
def test_search_finds_opawa_with_or_without_macrons(client, q):
    soup = page(client, f"/search?q={q}")
    assert matches(soup, "streets") == [
        ("/streets/opawa-road", "Ōpāwa Road, Ōpāwa also runs through St Albans")
    ]
    assert matches(soup, "places") == [("/places/opawa", "Ōpāwa Neighbourhood in Heathcote")]
    assert soup.select_one("input#q")["value"] == q


@pytest.mark.parametrize(
    ("q", "where"),
    [
        ("riccarton avenue", "/streets/riccarton-avenue"),
        ("RICCARTON AV", "/streets/riccarton-avenue"),
        ("opawa rd", "/streets/opawa-road"),
        ("red zone", "/places/red-zone-park"),
        ("heathcote", "/places/heathcote"),
        ("tiny city", "/"),
    ],
)
def test_exactly_one_match_goes_straight_to_its_page(client, q, where):
    response = client.get(f"/search?q={q}")
    assert response.status_code == 302
    assert response.headers["Location"] == where


def test_streets_of_one_name_are_told_apart_by_suburb(client):
    soup = page(client, "/search?q=school road")
    streets = matches(soup, "streets")
    assert len(streets) == 2
    hrefs = {href for href, _ in streets}
    assert len(hrefs) == 2
    suburbs = sorted(li.strong.get_text() for li in soup.select("#streets ul.matches li"))
    assert suburbs == ["Riccarton", "St Albans"]
    for href, _ in streets:
        assert client.get(href).status_code == 200


def test_no_match_says_so_and_suggests_near_names(client):
    soup = page(client, "/search?q=scool rood")
    assert soup.select_one("#streets") is None and soup.select_one("#places") is None
    assert "No street or place is called “scool rood”" in text(soup.select_one("#no-matches"))
    suggestions = matches(soup, "no-matches")
    assert ("/search?q=School+Road", "School Road") in suggestions
    # Each suggestion is itself a search that finds something.
    for href, _ in suggestions:
        assert client.get(href).status_code in (200, 302)


def test_near_names_include_places_and_ignore_macrons(client):
    soup = page(client, "/search?q=opaaw")
    names = [name for _, name in matches(soup, "no-matches")]
    assert "Ōpāwa" in names


def test_nothing_near_says_so_too(client):
    soup = page(client, "/search?q=zzzzqqqq")
    assert matches(soup, "no-matches") == []
    assert "Check the spelling" in text(soup.select_one("#no-matches"))


def test_the_name_list_is_read_once_per_data_stamp(app, client, monkeypatch):
    calls = []
    real = tracker.web.search.street_names

    def counting(session):
        calls.append(1)
        return real(session)

    monkeypatch.setattr(tracker.web.search, "street_names", counting)
    page(client, "/search?q=scool rood")
    page(client, "/search?q=riccartn")
    assert len(calls) == 1
    from page_helpers import store

    store(
        app,
        "council",
        works=[{"id": "w", "title": "W", "status": "planned", "street": "Ōpāwa Road"}],
    )
    page(client, "/search?q=scool rood")
    assert len(calls) == 2  # new data, new stamp: read again


def test_an_empty_search_shows_the_form_with_a_hint(client):
    for url in ("/search", "/search?q=", "/search?q=+++"):
        soup = page(client, url)
        assert soup.h1.get_text() == "Find a street or place"
        field = soup.select_one("form.search input#q")
        assert soup.select_one("label[for=q]") is not None
        assert field["aria-describedby"] == "q-hint"
        assert "opawa" in text(soup.select_one("#q-hint"))
        assert soup.select_one("#no-matches") is None


def test_an_over_long_search_is_refused_with_a_message(client):
    response = client.get("/search?q=" + "a" * 101)
    assert response.status_code == 400
    assert "at most 100 characters" in response.get_data(as_text=True)
    assert client.get("/search?q=" + "a" * 100).status_code == 200


def test_the_query_is_escaped(client):
    hostile = "<img src=x onerror=alert(1)>"
    response = client.get("/search", query_string={"q": hostile})
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<img src=x" not in body
    assert "&lt;img src=x onerror=alert(1)&gt;" in body


def test_autocomplete_is_a_deferred_script_on_a_datalist(client):
    soup = page(client, "/search")
    (script,) = [s for s in soup.find_all("script", src=True) if "search.js" in s["src"]]
    assert script.has_attr("defer")
    # No inline JavaScript: the only inline block is inert JSON data.
    inline = soup.find_all("script", src=False)
    assert [s.get("type") for s in inline] == ["application/json"]
    names = json.loads(inline[0].string)
    assert names["opawa"] == "Ōpāwa" and "tiny" not in names
    field = soup.select_one("input#q")
    assert soup.select_one(f"datalist#{field['list']}") is not None
    assert client.get(field["data-suggest"] + "?q=school").status_code == 200
    js = client.get(script["src"])
    body = js.data
    js.close()
    assert js.status_code == 200 and b"innerHTML" not in body


def test_the_city_page_and_every_page_link_to_search(client):
    soup = page(client, "/")
    assert soup.select_one("form.search")["action"] == "/search"
    assert soup.select_one('nav.site a[href="/search"]') is not None


def test_a_place_under_the_city_is_not_said_to_be_in_it(client):
    soup = page(client, "/search?q=c")  # the city itself and the area "Central"
    found = dict(matches(soup, "places"))
    assert found["/places/central"] == "Central Area"
    assert found["/"].startswith("Tiny City / Ōtautahi Iti City")
    crumbs = soup.select("nav.breadcrumbs a")
    assert text(crumbs[0]) == "Tiny City / Ōtautahi Iti"
