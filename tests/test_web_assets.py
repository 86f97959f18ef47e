"""Static files and compression: hashed addresses kept a year, compressed answers, and no
file left open by the compression."""

import gc
import re
import warnings

import pytest
from page_helpers import page

BROWSER_ENCODINGS = "gzip, deflate, br, zstd"  # what Chromium asks for


def test_static_addresses_carry_a_content_hash_and_are_kept_a_year(client):
    soup = page(client, "/")
    css = soup.find("link", rel="stylesheet")["href"]
    assert re.fullmatch(r"/static/css/site\.css\?v=[0-9a-f]{12}", css)
    response = client.get(css)
    assert response.cache_control.max_age == 365 * 24 * 3600
    # Without the hash the file is served but not kept.
    assert client.get("/static/css/site.css").cache_control.max_age is None


@pytest.mark.parametrize("path", ["/", "/static/css/site.css", "/api/v1/places"])
def test_answers_are_compressed_for_browsers_that_ask(client, path):
    if path.startswith("/static"):
        path = page(client, "/").find("link", rel="stylesheet")["href"]
    response = client.get(path, headers={"Accept-Encoding": BROWSER_ENCODINGS})
    assert response.headers["Content-Encoding"] in ("br", "gzip")
    assert "Accept-Encoding" in response.headers["Vary"]


def test_compressing_a_static_file_closes_it(client):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        response = client.get("/static/css/site.css", headers={"Accept-Encoding": "br"})
        assert response.headers["Content-Encoding"] == "br"
        response.close()
        del response
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
