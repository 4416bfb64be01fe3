"""Inbound API keys: ``Authorization: Bearer KEY`` on every path but the open ones.

Keys come from ``server.api_keys``, the file ``server.api_keys_file`` (one key per line,
``#`` comments) and the environment variable ``TOKENSTREAM_API_KEYS`` (comma or whitespace
separated); all are accepted. With no key from any of them, the server is open, as the
OpenAI SDKs expect of a local stand-in (they send any key).

A key is never logged, echoed in an error, or compared byte by byte: each presented token is
hashed and compared with every stored hash by ``hmac.compare_digest``, so neither the time
taken nor the answer tells how much of a key was right, or which key matched.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from tokenstream.config import Config, api_key_problem
from tokenstream.errors import ConfigError, Unauthorized

__all__ = [
    "KEYS_ENV_VAR",
    "KeyChecker",
    "auth_middleware",
    "load_api_keys",
    "path_is_open",
    "public_bind_warning",
]

KEYS_ENV_VAR = "TOKENSTREAM_API_KEYS"

log = logging.getLogger(__name__)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _keys_in_text(text: str) -> list[str]:
    keys = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        keys.extend(line.replace(",", " ").split())
    return keys


def load_api_keys(config: Config, environ: Mapping[str, str]) -> list[str]:
    """Every configured key; a missing file or a malformed key stops start-up."""
    server = config.server
    keys = [key.get_secret_value() for key in server.api_keys]
    if server.api_keys_file is not None:
        path = config.base_dir / server.api_keys_file
        try:
            file_keys = _keys_in_text(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(str(path), [("server.api_keys_file", str(exc))]) from None
        for number, key in enumerate(file_keys, 1):
            problem = api_key_problem(key)
            if problem:
                raise ConfigError(
                    str(path), [("server.api_keys_file", f"key #{number} {problem}")]
                )
        keys += file_keys
    env_keys = _keys_in_text(environ.get(KEYS_ENV_VAR, ""))
    for number, key in enumerate(env_keys, 1):
        problem = api_key_problem(key)
        if problem:
            raise ConfigError(
                f"environment variable {KEYS_ENV_VAR}", [("(value)", f"key #{number} {problem}")]
            )
    return keys + env_keys


def _digest(key: str | bytes) -> bytes:
    data = key.encode("utf-8", "surrogateescape") if isinstance(key, str) else key
    return hashlib.sha256(data).digest()


class KeyChecker:
    """Holds only the hashes of the keys."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple({_digest(key) for key in keys})

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __repr__(self) -> str:
        return f"KeyChecker({len(self._digests)} keys)"

    def accepts(self, presented: str) -> bool:
        candidate = _digest(presented)
        accepted = False
        for digest in self._digests:  # no early exit: every key costs the same time
            accepted |= hmac.compare_digest(digest, candidate)
        return accepted


def path_is_open(path: str, open_paths: Iterable[str]) -> bool:
    """``path`` equals an entry, or starts with an entry's prefix before a trailing ``*``."""
    for entry in open_paths:
        if entry.endswith("*"):
            if path.startswith(entry[:-1]):
                return True
        elif path == entry:
            return True
    return False


def client_identity(checker: KeyChecker) -> Callable[[web.Request], str]:
    """Who sent a request, for the per-client stream limit: with keys configured, the hash of
    the key it presented (never the key; the auth middleware has checked it), else its
    address (a token no one checks would let a client make up a new share per request)."""

    def by_address(request: web.Request) -> str:
        return "address:" + (request.remote or "-")

    if not checker:
        return by_address

    def by_key(request: web.Request) -> str:
        token = presented_key(request)
        if token is None:
            return by_address(request)  # an open path: no key was asked for
        return "key:" + _digest(token).hex()[:32]

    return by_key


def presented_key(request: web.Request) -> str | None:
    """The API key a request presents: ``Authorization: Bearer KEY``, or ``x-api-key: KEY``
    as Anthropic's clients send it."""
    token = _bearer_token(request.headers.get("Authorization"))
    if token is None:
        token = request.headers.get("x-api-key", "").strip() or None
    return token


def _bearer_token(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


_MISSING = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
_INCORRECT = (
    "Incorrect API key provided. Use one of the keys configured in server.api_keys, "
    f"server.api_keys_file or {KEYS_ENV_VAR}."
)


def auth_middleware(checker: KeyChecker, open_paths: list[str]) -> Middleware:
    """Refuse requests without a valid key with 401 (``RequestError``, rendered downstream)."""

    @web.middleware
    async def authenticate(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if path_is_open(request.path, open_paths):
            return await handler(request)
        token = presented_key(request)
        if token is None:
            log.info("refused %s %s: no API key", request.method, request.path)
            raise Unauthorized(_MISSING, code="missing_api_key", headers=_CHALLENGE)
        if not checker.accepts(token):
            log.info("refused %s %s: incorrect API key", request.method, request.path)
            raise Unauthorized(_INCORRECT, code="invalid_api_key", headers=_CHALLENGE)
        return await handler(request)

    return authenticate


_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="tokenstream"'}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def public_bind_warning(host: str, has_keys: bool) -> str | None:
    """The warning to print when the server listens beyond this machine with no keys."""
    if has_keys or _is_loopback(host):
        return None
    return (
        f"WARNING: tokenstream is listening on {host}, reachable from other machines, and no "
        "API key is configured: anyone who can reach it can use it. Set server.api_keys, "
        f"server.api_keys_file or {KEYS_ENV_VAR}, or bind to 127.0.0.1."
    )
