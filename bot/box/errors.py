"""Box API errors: one class per kind of failure, and how a failed answer becomes one."""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bot.redact import redact

MAX_ERROR_TEXT = 300
RETRY_AFTER_SECONDS = re.compile(r"\d+(?:\.\d+)?")


class BoxAPIError(Exception):
    """A Box API call failed; `status` is None when no HTTP answer arrived."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = redact(message)
        self.status = status
        self.code = code
        self.details: dict[str, Any] = dict(details or {})
        self.request_id = request_id
        self.retry_after = retry_after
        self.attempts = 1  # how many times the call was sent before it failed
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = [
            f"HTTP {self.status}" if self.status else None,
            self.code,
            f"requestId {self.request_id}" if self.request_id else None,
        ]
        suffix = ", ".join(part for part in parts if part)
        return f"{self.message} ({suffix})" if suffix else self.message


class BoxAuthError(BoxAPIError):
    """The API key is missing, wrong or not allowed (401/403)."""


class BoxBillingError(BoxAPIError):
    """The account has no credit or needs a plan (402)."""


class BoxNotFoundError(BoxAPIError):
    """The box, prompt run or repository does not exist (404)."""


class BoxRepoNotAvailableError(BoxNotFoundError):
    """The repository is not available to Box (the Box GitHub App cannot see it)."""


class BoxNotSupportedError(BoxAPIError):
    """The server does not offer this endpoint (older Box API)."""


class BoxConflictError(BoxAPIError):
    """The request conflicts with the current state (409); see `code` and `details`."""


class BoxRateLimitedError(BoxAPIError):
    """Too many requests (429); `retry_after` is in seconds when the server said."""


class BoxServerError(BoxAPIError):
    """The server failed (5xx)."""


class BoxUnavailableError(BoxAPIError):
    """No answer: connection error or timeout, after any allowed retries."""


class BoxPromptUnknownError(BoxAPIError):
    """Sending a prompt failed unclearly and the events could not tell whether it arrived."""


ERROR_CLASSES: dict[int, type[BoxAPIError]] = {
    402: BoxBillingError,
    404: BoxNotFoundError,
    409: BoxConflictError,
    429: BoxRateLimitedError,
}


def _error_class(status: int) -> type[BoxAPIError]:
    if status in (401, 403):
        return BoxAuthError
    if status >= 500:
        return BoxServerError
    return ERROR_CLASSES.get(status, BoxAPIError)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Read a `Retry-After` header given in seconds (`7`, `1.5`) or as an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if RETRY_AFTER_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def json_or_none(text: str) -> Any:
    """The JSON an answer's body holds, or None when it holds none."""
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def error_from_response(
    status: int, text: str, headers: Mapping[str, str], reason: str | None = None
) -> BoxAPIError:
    """Build the error for a non-2xx answer, envelope or not (REFERENCE.md §1.2)."""
    payload = json_or_none(text)
    request_id = headers.get("X-Request-Id")
    code: str | None = None
    message = ""
    details: dict[str, Any] = {}
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        inner = payload["error"]
        code = payload.get("code") or inner.get("code")
        message = payload.get("message") or inner.get("message") or ""
        details = inner.get("details") if isinstance(inner.get("details"), dict) else {}
        request_id = payload.get("requestId") or request_id
    elif isinstance(payload, dict):
        # A few endpoints answer `{"error": "<code>", "message": ...}` (REFERENCE.md §1.2).
        code = payload["error"] if isinstance(payload.get("error"), str) else payload.get("code")
        message = str(payload.get("message") or "")
        details = {k: v for k, v in payload.items() if k not in ("error", "code", "message")}
    else:
        message = " ".join(text.split())[:MAX_ERROR_TEXT]
    return _error_class(status)(
        message or reason or f"Box API answered HTTP {status}",
        status=status,
        code=str(code) if code else None,
        details=details,
        request_id=str(request_id) if request_id else None,
        retry_after=parse_retry_after(headers.get("Retry-After")),
    )
