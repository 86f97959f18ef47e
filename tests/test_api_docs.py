"""/api/docs: the OpenAPI document as a readable page, with nothing loaded from outside."""

import re

from bs4 import BeautifulSoup

from tracker import __version__
from tracker.api.spec import ENDPOINTS, openapi_document


def docs_page(client) -> tuple[str, BeautifulSoup]:
    response = client.get("/api/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    return html, BeautifulSoup(html, "html.parser")


def test_the_docs_page_shows_every_path_and_method_of_the_document(client):
    document = client.get("/api/openapi.json").get_json()
    _, soup = docs_page(client)
    headings = {h.get_text(" ", strip=True) for h in soup.select("section.api-operation h2")}
    expected = {
        f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item
    }
    assert expected and headings == expected
    for path, item in document["paths"].items():
        for method, operation in item.items():
            section = soup.find(
                id=re.sub(r"[^a-z0-9]+", "-", f"{method} {path}".lower()).strip("-")
            )
            body = section.find_parent("section").get_text(" ", strip=True)
            for parameter in operation.get("parameters", []):
                assert parameter["name"] in body, (path, parameter["name"])
            for status in operation["responses"]:
                assert status in body
            assert "curl" in body


def test_the_docs_page_has_every_schema_and_security_scheme(client):
    document = client.get("/api/openapi.json").get_json()
    html, soup = docs_page(client)
    for name in document["components"]["schemas"]:
        assert soup.find(id=f"schema-{name}") is not None, name
    for name in document["components"]["securitySchemes"]:
        assert f"<code>{name}</code>" in html
    assert soup.find(id="errors") and soup.find(id="paging") and soup.find(id="authentication")


def test_the_docs_page_gives_a_curl_command_with_a_token_for_writes(client):
    _, soup = docs_page(client)
    write = soup.find(id="post-api-v1-observations").find_parent("section")
    curl = write.select_one("pre.api-curl").get_text()
    assert curl.startswith("curl -X POST")
    assert '"Authorization: Bearer $TOKEN"' in curl
    assert "homes-repaired" in curl
    read = soup.find(id="get-api-v1-works").find_parent("section")
    assert "place=opawa" in read.select_one("pre.api-curl").get_text()


def test_the_docs_page_loads_nothing_from_outside_and_runs_no_script(client):
    html, soup = docs_page(client)
    assert soup.find("script") is None
    for tag, attribute in (("link", "href"), ("img", "src"), ("iframe", "src"), ("style", None)):
        for element in soup.find_all(tag):
            if attribute:
                assert element[attribute].startswith("/"), element
    assert not re.search(r"\son[a-z]+\s*=", html), "an event handler attribute"


def test_the_docs_page_escapes_what_the_document_says(app, client, monkeypatch):
    hostile = "<script>alert(1)</script> `<img src=x onerror=alert(2)>`"
    spec = next(s for s in ENDPOINTS if s.rule == "/api/v1/feeds")
    monkeypatch.setattr(spec, "summary", hostile)
    monkeypatch.setattr(spec, "description", hostile)
    html, soup = docs_page(client)
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert soup.find("script") is None and soup.find("img") is None


def test_the_docs_page_is_linked_from_every_page_footer(client):
    footer = BeautifulSoup(client.get("/").get_data(as_text=True), "html.parser").find("footer")
    assert footer.find("a", href="/api/docs") is not None


def test_request_examples_in_the_document_fit_their_schemas():
    from jsonschema import Draft202012Validator

    document = openapi_document("t", __version__)
    checked = 0
    for item in document["paths"].values():
        for operation in item.values():
            content = operation.get("requestBody", {}).get("content", {})
            body = content.get("application/json", {})
            if "example" in body:
                # Its "#/components/…" references resolve against this root.
                schema = {**body["schema"], "components": document["components"]}
                Draft202012Validator(schema).validate(body["example"])
                checked += 1
    assert checked == 2


def test_every_answer_links_to_a_schema_shown_on_the_page(client):
    _, soup = docs_page(client)
    section = soup.find(id="get-api-v1-rollup").find_parent("section")
    links = [a["href"] for a in section.select("table a")]
    assert "#schema-RollupAnswer" in links and "#schema-ErrorAnswer" in links
    for href in {a["href"] for a in soup.select("section.api-operation a[href^='#schema-']")}:
        assert soup.find(id=href[1:]) is not None, href
