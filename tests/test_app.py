"""The app factory: security headers, cookies, errors as JSON or HTML, settings docs."""

import re
from pathlib import Path

from tracker.settings import Settings

DOCS = Path(__file__).parent.parent / "docs"


def test_every_answer_carries_the_security_headers(client):
    answer = client.get("/")
    csp = answer.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert re.search(r"script-src 'self' 'nonce-[\w-]+'", csp)
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"


def test_each_answer_gets_a_new_nonce(client):
    first = client.get("/").headers["Content-Security-Policy"]
    second = client.get("/").headers["Content-Security-Policy"]
    assert first != second


def test_session_cookies_are_secure_httponly_samesite(app):
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"


def test_unknown_api_route_is_json_404(client):
    answer = client.get("/api/v1/nothing-here")
    assert answer.status_code == 404
    assert answer.is_json and "error" in answer.get_json()


def test_unknown_page_is_html_404(client):
    answer = client.get("/nothing-here")
    assert answer.status_code == 404
    assert answer.mimetype == "text/html"


def test_wrong_method_on_api_is_json_405(client):
    answer = client.delete("/api/v1/places")
    assert answer.status_code == 405
    assert answer.get_json()["error"]


def test_home_lists_the_neighbourhoods(client):
    page = client.get("/").get_data(as_text=True)
    assert "Ōpāwa" in page and "Red Zone Park" in page
    assert "Demo data" not in page  # nothing from the demo was loaded


def test_every_setting_is_documented():
    """docs/configuration.md names every TRACKER_* variable the code reads."""
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for name in Settings.model_fields:
        assert f"TRACKER_{name.upper()}" in text, name


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TRACKER_MAX_UPLOAD_MB", "2.5")
    monkeypatch.setenv("TRACKER_TREE", "elsewhere.yaml")
    settings = Settings(_env_file=None)
    assert settings.max_upload_mb == 2.5
    assert settings.tree == Path("elsewhere.yaml")


def test_default_database_is_sqlite_in_the_instance_folder(tmp_path):
    settings = Settings(instance_path=tmp_path / "inst", _env_file=None)
    url = settings.resolved_database_url()
    assert url.startswith("sqlite:///") and url.endswith("inst/tracker.sqlite3")


def test_secret_key_is_generated_once_and_kept(tmp_path):
    settings = Settings(instance_path=tmp_path / "inst", _env_file=None)
    key = settings.resolved_secret_key()
    assert len(key) >= 32
    assert settings.resolved_secret_key() == key


def test_a_worker_app_moves_its_start_up_objects_out_of_the_collectors_reach(settings):
    import gc

    from tracker import create_worker_app

    gc.unfreeze()
    try:
        app = create_worker_app(settings)
        assert gc.get_freeze_count() > 10_000
        assert app.config["DATABASE_URL"] == settings.database_url
    finally:
        gc.unfreeze()
        app.extensions["engine"].dispose()


def test_the_readme_layout_names_every_module():
    """README's layout lists every module of tracker/ and importers/, so a reader finds
    each one's job there."""
    root = Path(__file__).parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1].split("```")[1]
    words = set(re.findall(r"[a-z0-9_]+", layout))
    missing = [
        str(path.relative_to(root))
        for folder in ("tracker", "importers")
        for path in sorted((root / folder).rglob("*.py"))
        if "migrations" not in path.parts and path.stem != "__init__" and path.stem not in words
    ]
    packages = [p.name for p in (root / "tracker").iterdir() if (p / "__init__.py").exists()]
    missing += [f"tracker/{name}/" for name in packages if f"{name}/" not in layout]
    assert missing == []
