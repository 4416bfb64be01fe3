"""Exceptions raised by tokenstream.

    TokenstreamError
     ├── ConfigError        a config file (or embedded default) is invalid: raised at start-up
     ├── TokenizerError     an encoding could not be loaded
     ├── UpstreamStreamError   the upstream failed after the reply started: an error event
     └── RequestError       a client request cannot be served; rendered as an OpenAI-style error
          ├── InvalidRequest    400 invalid_request_error
          ├── Unauthorized      401 (missing or wrong API key)
          ├── NotFound          404
          ├── TooManyRequests   429 (with Retry-After)
          ├── Unavailable       503 (shutting down, with Retry-After)
          └── UpstreamError     the upstream failed before the reply started: its own status,
                                502 when it cannot be reached, 504 when it does not answer
"""

from __future__ import annotations

from typing import Any


class TokenstreamError(Exception):
    """Base class of every error tokenstream raises on purpose."""


class ConfigError(TokenstreamError):
    """A configuration file failed validation. The message names the file, key and reason."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"invalid configuration in {source}:"]
        lines += [f"  {key}: {reason}" for key, reason in problems]
        super().__init__("\n".join(lines))


class TokenizerError(TokenstreamError):
    """An encoding could not be loaded offline."""


class RequestError(TokenstreamError):
    """An error answered to the client in the OpenAI error shape."""

    status = 400
    error_type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        if status is not None:
            self.status = status
        if error_type is not None:
            self.error_type = error_type
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code)


class InvalidRequest(RequestError):
    status = 400


class NotFound(RequestError):
    status = 404
    error_type = "not_found_error"


class UpstreamError(RequestError):
    """The upstream refused or failed the request before any of the reply was sent."""

    status = 502
    error_type = "upstream_error"


class UpstreamStreamError(TokenstreamError):
    """The upstream failed after the reply started; the client gets an error event."""

    def __init__(
        self, message: str, *, error_type: str = "upstream_error", code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.code = code


class Unauthorized(RequestError):
    status = 401


class TooManyRequests(RequestError):
    status = 429
    error_type = "requests"


class Unavailable(RequestError):
    status = 503
    error_type = "server_error"


def error_body(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The body OpenAI's API answers with on error: ``{"error": {message, type, param, code}}``."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}
