"""The rebuild tracker: a place-based results tracker for the Christchurch rebuild."""

import gc

from flask import Flask

from tracker.settings import Settings

__version__ = "0.1.0"


def create_app(settings: Settings | None = None) -> Flask:
    """Build the web app. Wiring only: each part registers itself with init_app."""
    from importers import load_importers
    from tracker import db, observability, security
    from tracker.api import api
    from tracker.open311 import bp as open311
    from tracker.web import init_app as init_web
    from tracker.web.health import bp as health

    settings = settings or Settings()
    load_importers(settings.importer_modules())  # the site's own feed formats
    app = Flask(
        __name__,
        instance_path=str(settings.instance_path.resolve()),
        template_folder="../templates",
        static_folder="../static",
    )
    app.config.update(
        SETTINGS=settings,
        DATABASE_URL=settings.resolved_database_url(),
        READ_DATABASE_URL=settings.read_database_url,  # a replica for public reads, or None
        READ_MAX_LAG_SECONDS=settings.read_max_lag_seconds,
        SECRET_KEY=settings.resolved_secret_key(),
        SECRET_KEY_FALLBACKS=settings.fallback_keys(),  # sessions signed before a rotation
        MAX_CONTENT_LENGTH=int(settings.max_upload_mb * 1024 * 1024),
        JSON_SORT_KEYS=False,
    )
    db.init_app(app)
    observability.init_app(app)  # first: the request id is set before anything refuses
    security.init_app(app)
    app.register_blueprint(api)
    app.register_blueprint(open311)  # GeoReport v2 (CONTRACT §8), beside /api
    app.register_blueprint(health)  # /healthz, /readyz, /metrics
    init_web(app)
    return app


def create_worker_app(settings: Settings | None = None) -> Flask:
    """create_app for a long-running web worker (wsgi.py, `tracker serve`).

    Everything made so far (modules, the app: about 150,000 objects) lives as long as
    the worker, so it is moved out of the garbage collector's reach (gc.freeze): its
    full passes then scan only what requests make. Without this a full pass took about
    90 ms here and landed in one roll-up after a write in four (docs/performance.md).
    """
    from tracker.observability import configure_logging

    settings = settings or Settings()
    configure_logging(settings)
    app = create_app(settings)
    gc.freeze()
    return app
