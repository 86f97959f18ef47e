"""The tracker's own exceptions; one handler (tracker.web.errors) renders them as HTML or JSON."""

from typing import Any


class TrackerError(Exception):
    """A refusal the user can act on: its message is safe to show, its status is HTTP's."""

    status = 400

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        errors: list[dict[str, Any]] | None = None,
        retry_after: int | None = None,
        field: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.errors = errors
        self.retry_after = retry_after  # seconds; sent as a Retry-After header
        # The input field the refusal is about (a form shows it there; an API names it).
        self.field = field

    def headers(self) -> dict[str, str]:
        """The response headers this refusal carries (Retry-After when it has one)."""
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}

    def to_json(self) -> dict[str, Any]:
        if self.errors is not None:
            return {"error": self.message, "errors": self.errors}
        return {"error": self.message}


class NotFound(TrackerError):
    status = 404
