"""Configuration: every TRACKER_* variable, from the environment or an optional `.env` file.

docs/configuration.md lists the same settings; a test keeps the two in step.
"""

import secrets
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """The tracker's settings. Each field's description is its help line."""

    model_config = SettingsConfigDict(
        env_prefix="TRACKER_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the database. Default: an SQLite file `tracker.sqlite3` "
        "in the instance folder. PostgreSQL: `postgresql+psycopg://USER@HOST:5432/DB`.",
    )
    read_database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of a read-only streaming replica of `database_url` "
        "(PostgreSQL). Anonymous GETs of public pages and the read API read it; writes, "
        "staff, the scheduler and the CLI use the primary. Default: none (all on one).",
    )
    read_max_lag_seconds: float = Field(
        default=30,
        ge=0,
        description="While the replica is further behind than this, its reads go to the "
        "primary (each worker asks it once a second). 0: use it however far behind.",
    )
    tree: Path = Field(
        default=Path("results_tree.yaml"),
        description="Path of the results tree (results, outputs, measures, places, agencies).",
    )
    secret_key: str | None = Field(
        default=None,
        description="Key that signs sessions and CSRF tokens. Default: a random key kept in "
        "`secret_key` in the instance folder (set it explicitly when running several hosts).",
    )
    secret_key_fallbacks: str = Field(
        default="",
        description="Earlier secret keys, comma-separated, still accepted while a new "
        "`secret_key` takes over: sessions and the links in mail already sent keep "
        "working. Remove them once those have aged out (docs/operations.md).",
    )
    max_upload_mb: float = Field(
        default=10, gt=0, description="Largest request body accepted, in megabytes."
    )
    instance_path: Path = Field(
        default=Path("instance"),
        description="Folder for local state: the default SQLite database and secret key.",
    )
    importers: str = Field(
        default="",
        description="Comma-separated Python modules that register feed formats of this "
        "site's own (`@importers.register`); imported at start-up, before the tree is read.",
    )
    secure_cookies: bool = Field(
        default=True,
        description="Mark session cookies `Secure` (sent over HTTPS only; browsers also "
        "send them to http://127.0.0.1). Turn off only for plain-HTTP test hosts.",
    )

    map_tiles: str = Field(
        default="https://tile.openstreetmap.org/{z}/{x}/{y}.png",
        description="XYZ URL template of the maps' background tiles, the one thing a page "
        "loads from outside the site (its host is added to the CSP). Empty for no tiles: "
        "the maps still draw boundaries, streets and works.",
    )
    map_attribution: str = Field(
        default='&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> '
        "contributors",
        description="Attribution shown on every map for its tiles (HTML).",
    )

    # --- mail and following an area (issue 12) ---
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="The site's absolute base URL (scheme, host and any path prefix), for "
        "the links in mail and feeds.",
    )
    smtp_host: str = Field(
        default="", description="SMTP server for outgoing mail. Empty: mail stays queued."
    )
    smtp_port: int = Field(default=587, gt=0, lt=65536, description="SMTP server port.")
    smtp_user: str = Field(default="", description="SMTP login; empty for none.")
    smtp_password: str = Field(default="", description="SMTP password for `smtp_user`.")
    smtp_starttls: bool = Field(
        default=True, description="Upgrade the SMTP connection with STARTTLS before login."
    )
    mail_from: str = Field(
        default="Rebuild tracker <noreply@localhost>",
        description="The From address of every mail the tracker sends.",
    )
    alert_digest_hours: float = Field(
        default=24,
        gt=0,
        description="How often an email alert's digest goes out, in hours (24: daily). "
        "Nothing is sent for a period in which nothing changed.",
    )

    # --- running in production (issue 13) ---
    page_stale_seconds: float = Field(
        # Two minutes: a resident cannot tell it from live (each page says when its
        # figures arrived, staff and the API see them at once), and a page opened less
        # often than this by each worker is built in the visitor's request after a write.
        default=120,
        ge=0,
        le=3600,
        description="How long after a write a public page may still be served as it was, "
        "while it is rebuilt in the background (the page says when its figures arrived). "
        "0 builds every out-of-date page in the request. Signed-in staff and the API "
        "always see the data as it is.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`text` (one readable line per event) or `json` (one JSON object per "
        "line, for a log collector). Every line carries the request id.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="The lowest level logged."
    )
    proxy_hops: int = Field(
        default=0,
        ge=0,
        le=5,
        description="How many reverse proxies in front of the tracker set `X-Forwarded-For`, "
        "`-Proto`, `-Host`, `-Port` and `-Prefix` (1 behind one nginx). 0 trusts none: "
        "rate limits, sign-in throttling and logs then see the proxy's address.",
    )

    def tile_origin(self) -> str | None:
        """scheme://host[:port] of `map_tiles`, for the CSP; None without tiles."""
        if not self.map_tiles:
            return None
        parts = urlsplit(self.map_tiles)
        return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None

    def importer_modules(self) -> list[str]:
        """The module names in `importers`."""
        return [name.strip() for name in self.importers.split(",") if name.strip()]

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.instance_path.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(self.instance_path / 'tracker.sqlite3').resolve()}"

    def fallback_keys(self) -> list[str]:
        """The earlier secret keys in `secret_key_fallbacks`, newest first as given."""
        return [key.strip() for key in self.secret_key_fallbacks.split(",") if key.strip()]

    def resolved_secret_key(self) -> str:
        if self.secret_key:
            return self.secret_key
        key_file = self.instance_path / "secret_key"
        if not key_file.exists():
            self.instance_path.mkdir(parents=True, exist_ok=True)
            key_file.write_text(secrets.token_hex(32))
            key_file.chmod(0o600)
        return key_file.read_text().strip()
