"""How the session reaches the upstream: the proxy from the environment and the TLS
settings, read once at start-up.
"""

from __future__ import annotations

import logging
import ssl
import urllib.request
from collections.abc import Mapping

import aiohttp
from yarl import URL

from tokenstream.config import UpstreamConfig, ca_context
from tokenstream.errors import ConfigError

__all__ = ["KEEPALIVE_S", "proxy_from_environment", "send", "tls_setting"]

log = logging.getLogger(__name__)

KEEPALIVE_S = 4.0
"""An idle connection is closed after this long: before the 5 s after which uvicorn (vLLM and
many Python servers) and Node close theirs, so that a request rarely meets a connection the
server is closing (which would fail it: it is not sent twice)."""


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: Mapping[str, str],
    data: bytes | None,
    proxy: URL | None,
) -> aiohttp.ClientResponse:
    # no redirect is followed: a 3xx is an error that says where it points
    return await session.request(
        method, URL(url), headers=headers, data=data, allow_redirects=False, proxy=proxy
    )


def proxy_from_environment(base_url: str) -> URL | None:
    """The proxy HTTPS_PROXY or HTTP_PROXY names for the upstream, unless NO_PROXY covers its
    host (credentials in its URL are sent to it as ``Proxy-Authorization``).

    Read once, with the functions aiohttp's ``trust_env`` calls: with ``trust_env`` aiohttp
    reads them again for every request, in a worker thread, which cost 0.3-0.5 ms on the
    way to each first token (and .netrc too, for requests sent without a key).
    """
    upstream = URL(base_url)
    if upstream.host is None or urllib.request.proxy_bypass(upstream.host):
        return None
    value = urllib.request.getproxies().get(upstream.scheme)
    if not value:
        return None
    try:
        proxy = URL(value)
    except ValueError:
        proxy = URL()
    if proxy.scheme != "http" or proxy.host is None:
        log.warning(
            "the proxy in %s_PROXY is not used: give it as http://HOST:PORT",
            upstream.scheme.upper(),
        )
        return None
    log.info("requests to the upstream go through the proxy %s", proxy.with_user(None))
    return proxy


def tls_setting(config: UpstreamConfig) -> ssl.SSLContext | bool:
    """aiohttp's ``ssl`` for the upstream: the system's CAs, ``ca_file``'s, or no check."""
    if not config.verify_tls:
        log.warning("upstream.verify_tls is false: the upstream's certificate is not checked")
        return False
    if config.ca_file is None:
        return True
    try:
        return ca_context(config.ca_file)
    except ValueError as exc:
        raise ConfigError("the upstream settings", [("upstream.ca_file", str(exc))]) from None
