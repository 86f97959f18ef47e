"""Feed health: each feed's latest run and rejected rows, and each agency's timeliness."""

from datetime import datetime
from zoneinfo import ZoneInfo

from flask import Blueprint, current_app, render_template

from tracker.db import get_session
from tracker.demo import has_demo_data
from tracker.feeds import agency_names, city_timezone, feed_health, run_rejections
from tracker.models import utcnow
from tracker.rollup import app_cache, timeliness
from tracker.scheduler import lease_holder

bp = Blueprint("feeds", __name__)

REJECTIONS_SHOWN = 20


@bp.get("/feeds")
def index():
    """Feeds by agency: status, freshness, rejected rows, and reporting timeliness."""
    session = get_session()
    now = utcnow()
    health = feed_health(session, now=now)
    cache = app_cache(current_app)  # one tree for every agency, and none rebuilt if unchanged
    zone = ZoneInfo(city_timezone(session))
    names = agency_names(session, {feed.agency for feed in health})
    agencies = [
        {
            "id": agency_id,
            "name": name,
            "feeds": [feed for feed in health if feed.agency == agency_id],
            "timeliness": timeliness(session, agency_id=agency_id, cache=cache),
        }
        for agency_id, name in names.items()
    ]
    rejections = {
        feed.id: run_rejections(session, feed.run_id, limit=REJECTIONS_SHOWN)
        for feed in health
        if feed.rejected
    }

    def local(moment: datetime | None) -> str:
        """A time in the city's timezone, as residents read clocks."""
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z") if moment else "—"

    return render_template(
        "feeds/index.html",
        agencies=agencies,
        rejections=rejections,
        shown=REJECTIONS_SHOWN,
        lease=lease_holder(session, now=now),
        local=local,
        demo=has_demo_data(session),
    )
