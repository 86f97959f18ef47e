"""Running it: a secret key rotated without signing everyone out or breaking mailed links,
and the example deployment files agreeing with the app they deploy."""

import re
from pathlib import Path

from staff_helpers import add_user, sign_in
from test_alerts import confirmed, outbox, path_in, subscriptions

from tracker import create_app

ROOT = Path(__file__).parent.parent


def rotated(app, settings, *, keep_old: bool):
    """The same site after its secret key changed, the old one kept as a fallback or not."""
    old = app.config["SECRET_KEY"]
    fallbacks = old if keep_old else ""
    new = settings.model_copy(update={"secret_key": "a-new-key-" + "x" * 40,
                                      "secret_key_fallbacks": fallbacks})  # fmt: skip
    return create_app(new)


def test_a_rotated_key_keeps_sessions_and_mailed_links_while_the_old_is_a_fallback(
    app, client, settings
):
    add_user(app, "staff@example.org", role="official", agency_id=None)
    sign_in(client, "staff@example.org")
    assert client.get("/admin").status_code == 200
    confirmed(app, client)
    stop = path_in(outbox(app)[0], "/alerts/unsubscribe")
    cookie = client.get_cookie("tracker_session").value

    kept, dropped = (rotated(app, settings, keep_old=keep) for keep in (True, False))
    try:
        after = kept.test_client()
        after.set_cookie("tracker_session", cookie)
        assert after.get("/admin").status_code == 200  # still signed in
        assert after.get(stop).status_code == 200  # the mailed link still works

        gone = dropped.test_client()
        gone.set_cookie("tracker_session", cookie)
        assert gone.get("/admin").status_code in (302, 303)  # signed out: to the sign-in page
        assert gone.get(stop).status_code == 404  # without the fallback the link has expired
    finally:
        for other in (kept, dropped):
            other.extensions["engine"].dispose()
    assert len(subscriptions(app)) == 1


def test_nginx_sets_exactly_the_forwarded_headers_the_proxy_fix_reads():
    site = (ROOT / "deploy" / "nginx" / "tracker.conf").read_text()
    set_headers = set(re.findall(r"proxy_set_header\s+(X-Forwarded-\w+)", site))
    assert set_headers == {"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host",
                           "X-Forwarded-Port"}  # fmt: skip
    # It replaces what the client sent (one trusted hop), never appends to it.
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in site
    assert "$proxy_add_x_forwarded_for" not in site
    static = re.search(r"location /static/ \{\s*alias (\S+);", site).group(1)
    assert static.rstrip("/").endswith("/static")
    assert "allow" in site.split("location = /metrics", 1)[1].split("}", 1)[0]


def test_the_systemd_units_run_the_configured_gunicorn_and_one_scheduler():
    web = (ROOT / "deploy" / "systemd" / "tracker-web.service").read_text()
    scheduler = (ROOT / "deploy" / "systemd" / "tracker-scheduler.service").read_text()
    assert "gunicorn -c deploy/gunicorn.conf.py wsgi:app" in web
    assert "PROMETHEUS_MULTIPROC_DIR=/run/tracker-metrics" in web
    assert "RuntimeDirectory=tracker-metrics" in web
    assert re.search(r"^ExecStart=\S+/tracker scheduler$", scheduler, re.M)
    for unit in (web, scheduler):
        assert "EnvironmentFile=/etc/tracker/tracker.env" in unit
        assert re.search(r"^User=tracker$", unit, re.M)
    assert (ROOT / "deploy" / "gunicorn.conf.py").exists()
