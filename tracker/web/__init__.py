"""Page blueprints, one module per page kind, and the one error handler."""

from flask import Flask


def init_app(app: Flask) -> None:
    from tracker import csrf
    from tracker.web import (
        admin,
        agencies,
        agency,
        api_docs,
        assets,
        auth,
        challenges,
        errors,
        exports,
        feeds,
        follow,
        home,
        pages,
        places,
        results,
        search,
        streets,
    )
    from tracker.web import comments as comment_pages

    csrf.init_app(app)
    auth.init_app(app)
    pages.init_app(app)
    assets.init_app(app)
    exports.init_app(app)
    app.register_blueprint(home.bp)
    app.register_blueprint(search.bp)
    app.register_blueprint(places.bp)
    app.register_blueprint(streets.bp)
    app.register_blueprint(results.bp)
    app.register_blueprint(agencies.bp)
    app.register_blueprint(agency.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(comment_pages.bp)
    app.register_blueprint(feeds.bp)
    app.register_blueprint(exports.bp)
    app.register_blueprint(api_docs.bp)
    from tracker.web import reports as report_pages

    app.register_blueprint(report_pages.bp)
    app.register_blueprint(follow.bp)
    app.register_blueprint(challenges.bp)
    errors.init_app(app)
