"""Page blueprints, one module per page kind, and the one error handler."""

from flask import Flask


def init_app(app: Flask) -> None:
    from tracker.web import errors, home

    app.register_blueprint(home.bp)
    errors.init_app(app)
