"""An agency's page (`/agencies/ID`) and a work's (`/works/AGENCY/REF`): status history,
"status unknown", awkward ids, escaping, figures equal to the API's, a retired agency."""

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml
from page_helpers import forget_pages, map_features, map_scripts, page, store, text
from sqlalchemy import select
from sqlmodel import Session

from tracker.cli import main
from tracker.models import Work
from tracker.settings import Settings

HOSTILE = "<img src=x onerror=alert(1)>`${alert(2)}`\\"
TINY = Path(__file__).parent / "fixtures" / "tiny_city"


@pytest.fixture
def settings(database_url, tmp_path) -> Settings:
    """The tiny city in a folder of its own, so a test can retire an agency from its tree."""
    folder = tmp_path / "city"
    shutil.copytree(TINY, folder)
    return Settings(
        database_url=database_url,
        tree=folder / "tree.yaml",
        instance_path=tmp_path / "instance",
        secret_key="test-secret",
        map_tiles="",
        _env_file=None,
    )


def work(ref="w1", status="planned", title=None, **extra):
    row = {
        "id": ref,
        "title": title or f"Work {ref}",
        "status": status,
        "geometry": {"type": "LineString", "coordinates": [[172.603, -43.535], [172.607, -43.535]]},
    }
    if status == "complete":
        row |= {"actual_start": "2014-01-01", "actual_end": "2014-02-01"}
    return row | extra


def work_url(agency, ref):
    return f"/works/{agency}/{quote(ref, safe='/')}"


# --- a work's page ---------------------------------------------------------------------------


def test_status_history_is_newest_first_after_two_status_changes(app, client):
    planned = {"planned_start": "2014-01-01", "planned_end": "2014-06-30"}
    store(app, "council", works=[work(**planned)])
    store(app, "council", works=[work(status="in_progress", actual_start="2014-01-05", **planned)])
    soup = page(client, "/works/council/w1")
    assert text(soup.h1) == "Work w1"
    rows = [text(tr) for tr in soup.select("#history tbody tr")]
    assert len(rows) == 2
    assert "Planned → Under way" in rows[0]
    assert "first reported as planned" in rows[1]
    assert all("the API" in row for row in rows)
    facts = text(soup.select_one("#facts"))
    assert "1 Jan 2014 to 30 Jun 2014" in facts and "started 5 Jan 2014" in facts
    agency = soup.select_one("#facts a[href='/agencies/council']")
    assert text(agency) == "City Council"


def test_an_open_work_unchanged_for_eight_weeks_reads_status_unknown(app, client):
    store(app, "council", works=[work(status="in_progress")])
    assert "Status unknown" not in text(page(client, "/works/council/w1").select_one(".lede"))
    with Session(app.extensions["engine"]) as session:
        row = session.scalar(select(Work).where(Work.ref == "w1"))
        row.updated_at = datetime.now(UTC) - timedelta(weeks=9)
        session.add(row)
        session.commit()
    forget_pages(app)
    soup = page(client, "/works/council/w1")
    lede = text(soup.select_one(".lede"))
    assert "Status unknown" in lede
    assert "it was under way" in lede  # what the agency last said
    (script,) = map_scripts(soup)
    (mark,) = [f for f in map_features(script) if "title" in f["properties"]]
    assert mark["properties"]["status"] == "Status unknown"
    agency = page(client, "/agencies/council")
    counts = {text(tr.th): text(tr.td) for tr in agency.select("#works table.counts tbody tr")}
    assert counts["Under way"] == "0" and counts["Status unknown"] == "1"
    assert "Status unknown" in text(agency.select_one("#works ul li"))


def test_a_ref_with_slash_space_and_ampersand_resolves(app, client):
    # The write path takes only plain ids today; a ref from older data can hold anything.
    ref = "roads/2014 main & side"
    store(app, "council", works=[work("w1", title=f"Work {ref}")])
    with Session(app.extensions["engine"]) as session:
        row = session.scalar(select(Work).where(Work.ref == "w1"))
        row.ref = ref
        session.add(row)
        session.commit()
    forget_pages(app)
    soup = page(client, work_url("council", ref))
    assert text(soup.h1) == f"Work {ref}"
    assert text(soup.select_one("#facts code")) == f"council/{ref}"
    # The agency page links to it at an address that resolves to the same page.
    link = page(client, "/agencies/council").select_one("#works ul a")
    assert text(link) == f"Work {ref}"
    assert text(page(client, link["href"]).h1) == f"Work {ref}"
    crumbs = soup.select("nav.breadcrumbs li")
    assert crumbs[-1].a["aria-current"] == "page" and crumbs[-1].a["href"] == link["href"]


def test_the_work_page_says_where_it_is_beside_its_map(app, client):
    store(app, "council", works=[work()])
    soup = page(client, "/works/council/w1")
    where = text(soup.select_one("#where"))
    assert "43.535" in where and "° S" in where and "172.60" in where
    places = [a["href"] for a in soup.select("#where a[href^='/places/']")]
    assert places  # the neighbourhood(s) it lies in
    assert soup.select_one(".skip-map")["href"] == "#where"
    crumbs = [a["href"] for a in soup.select("nav.breadcrumbs a")]
    assert crumbs[0] == "/" and crumbs[1] == places[0]
    (script,) = map_scripts(soup)
    features = map_features(script)
    (mark,) = [f for f in features if "title" in f["properties"]]
    assert mark["geometry"]["type"] == "LineString"  # the whole work, not a point
    assert {f["id"] for f in features if "name" in f["properties"]} == {
        h.rsplit("/", 1)[1] for h in places
    }


def test_a_hostile_title_is_escaped_in_the_page_and_the_map(app, client):
    store(app, "council", works=[work(title=HOSTILE)])
    response = client.get("/works/council/w1")
    html = response.get_data(as_text=True)
    assert "<img src=x" not in html
    soup = page(client, "/works/council/w1")
    assert text(soup.h1) == HOSTILE
    (script,) = map_scripts(soup)
    assert "<img src=x" not in script and "${alert(2)}" not in script
    (mark,) = [f for f in map_features(script) if "title" in f["properties"]]
    assert mark["properties"]["title"] == (
        "&lt;img src=x onerror=alert(1)&gt;&#96;&#36;{alert(2)}&#96;&#92;"
    )
    assert "<img src=x" not in client.get("/agencies/council").get_data(as_text=True)


@pytest.mark.parametrize(
    "url", ["/works/council/nope", "/works/nobody/w1", "/agencies/nobody", "/works/council/w1/x"]
)
def test_unknown_works_and_agencies_are_404(app, client, url):
    store(app, "council", works=[work()])
    assert client.get(url).status_code == 404


def test_a_bad_cursor_is_400(app, client):
    store(app, "council", works=[work()])
    assert client.get("/agencies/council?after=nope").status_code == 400
    assert client.get("/agencies/council?after=" + "x" * 300).status_code == 400


# --- an agency's page ------------------------------------------------------------------------


def city_statuses(client) -> dict[str, str]:
    answer = client.get("/api/v1/rollup?place=tiny").get_json()
    statuses, stack = {}, list(answer["results"])
    while stack:
        node = stack.pop()
        statuses[node["id"]] = node["status"]
        stack.extend(node["children"])
    return statuses


def test_the_agency_lists_its_measures_with_the_citys_status(app, client):
    store(
        app,
        "council",
        observations=[
            {
                "measure": "people-supported",
                "place": "opawa",
                "date": "2013-03-31",
                "value": 40,
                "dims": {"age": "65+"},
            },
            {"measure": "wellbeing-score", "place": "opawa", "date": "2013-12-31", "value": 60},
        ],
    )
    soup = page(client, "/agencies/council")
    assert text(soup.h1) == "City Council"
    rows = soup.select("#responsible tbody tr")
    shown = {row["id"].removeprefix("measure-"): row for row in rows}
    assert set(shown) == {"people-supported", "wellbeing-score", "pipes-relaid"}
    statuses = city_statuses(client)
    for measure_id, row in shown.items():
        assert row.th.a["href"] == f"/measures/{measure_id}"
        badge = row.select_one(".status")["class"][1].removeprefix("status-")
        assert badge == statuses.get(measure_id, "no_data"), measure_id
    bars = soup.select("#responsible .bar")
    assert bars and all(bar["aria-label"].startswith("Progress of ") for bar in bars)
    assert "0%" not in text(soup.select_one("#responsible")).replace("100%", "")
    assert "homes-repaired" not in str(soup.select_one("#responsible"))  # eqc's


def test_timeliness_on_the_page_equals_the_api(app, client):
    store(
        app,
        "eqc",
        observations=[
            {"measure": "homes-repaired", "place": p, "date": d, "value": 10}
            for p in ("opawa", "st-albans")
            for d in ("2012-01-31", "2012-02-29", "2012-03-31")
        ],
    )
    api = client.get("/api/v1/timeliness?agency=eqc").get_json()
    soup = page(client, "/agencies/eqc")
    for row in api:
        cells = soup.select_one(f"#timeliness-{row['measure']}")
        assert text(cells.select_one(".received")) == (
            f"{row['received']:,} of {row['expected']:,} received"
        )
        assert text(cells.select_one(".on-time")) == (
            f"{row['on_time']:,} of {row['expected']:,} on time"
        )
    assert api[0]["received"] == 6
    assert soup.select_one("#demo-timeliness") is None  # said only of demo data


def test_works_counts_and_paging(app, client, monkeypatch):
    monkeypatch.setattr("tracker.web.agencies.AGENCY_WORKS_SHOWN", 2)
    store(app, "council", works=[work("a"), work("b", "complete"), work("c", "cancelled")])
    soup = page(client, "/agencies/council")
    counts = [text(td) for td in soup.select("#works table.counts td")]
    assert counts == ["1", "0", "1", "1", "0", "3"]
    first = [text(a) for a in soup.select("#works ul a")]
    older = soup.select_one("#works a[rel=next]")
    rest = [text(a) for a in page(client, older["href"]).select("#works ul a")]
    assert len(first) == 2 and len(rest) == 1
    assert sorted(first + rest) == ["Work a", "Work b", "Work c"]


def test_the_feeds_page_links_each_agency(app, client):
    from tracker.models import Feed

    with Session(app.extensions["engine"]) as session:
        session.add(Feed(id="council-works", agency_id="council", url="file:x.csv", format="csv",
                         every="1d", provides="works"))  # fmt: skip
        session.commit()
    feeds = page(client, "/feeds")
    assert feeds.select_one("#agency-council a")["href"] == "/agencies/council"
    soup = page(client, "/agencies/council")
    section = soup.select_one("#feeds")
    assert "council-works" in text(section) and "never run" in text(section)
    assert section.select_one("a[href='/feeds#agency-council']")


def test_a_retired_agency_keeps_its_page_and_its_works(app, client, runner, settings):
    store(app, "council", works=[work(measure="pipes-relaid", quantity=2, status="complete")])
    tree = yaml.safe_load(settings.tree.read_text(encoding="utf-8"))
    tree["agencies"] = [a for a in tree["agencies"] if a["id"] != "council"]
    tree["results"] = [r for r in tree["results"] if r["id"] not in ("water", "wellbeing")]
    settings.tree.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
    result = runner.invoke(main, ["init"])
    assert result.exit_code == 0, result.output

    soup = page(client, "/agencies/council")
    assert "Retired." in text(soup.select_one(".retired"))
    assert "Wastewater pipe relaid" in text(soup.select_one("#responsible"))  # a past measure
    assert [text(a) for a in soup.select("#works ul a")] == ["Work w1"]
    assert text(soup.select_one("#works table.counts tbody")).endswith("1")
    assert page(client, "/works/council/w1").select_one("#facts")
