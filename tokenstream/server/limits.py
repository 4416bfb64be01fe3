"""Request limits from ``server.*``: pure checks that raise an OpenAI-style error.

The concurrency limits live in ``engine.registry`` and the stream duration in the runner's
watch; the body size is enforced by aiohttp (``client_max_size``) and rendered by the app's
error middleware. These are the ones decided from the request itself.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from tokenstream.config import ServerConfig
from tokenstream.errors import InvalidRequest, RequestError

__all__ = [
    "check_body_encoding",
    "check_prompt_tokens",
    "check_query_encoding",
    "reply_token_limit",
]


def check_prompt_tokens(server: ServerConfig, prompt_tokens: int, param: str) -> None:
    limit = server.max_prompt_tokens
    if limit is not None and prompt_tokens > limit:
        raise InvalidRequest(
            f"This server's maximum prompt length is {limit} tokens (server.max_prompt_tokens). "
            f"However, your messages resulted in {prompt_tokens} tokens. Please reduce the "
            "length of the messages.",
            param=param,
            code="context_length_exceeded",
        )


def reply_token_limit(server: ServerConfig, requested: int | None, param: str) -> int | None:
    """The reply's token budget: the request's, refused above the server's maximum."""
    limit = server.max_reply_tokens
    if limit is None:
        return requested
    if requested is not None and requested > limit:
        raise InvalidRequest(
            f"'{param}' is too large: {requested}. This server replies with at most {limit} "
            "tokens (server.max_reply_tokens).",
            param=param,
            code="invalid_value",
        )
    return limit if requested is None else requested


def check_query_encoding(raw_query: str) -> None:
    """Refuse a query string whose percent-escapes are not UTF-8.

    aiohttp (yarl) would decode them to U+FFFD and the reply would silently change.
    """
    if "%" not in raw_query:
        return  # nothing is percent-decoded (aiohttp refuses raw bytes that are not ASCII)
    try:
        # decoding the whole string at once is as strict as decoding each name and value:
        # the separators are ASCII, so a sequence they cut is invalid either way
        unquote_to_bytes(raw_query).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"The query string is not valid UTF-8 after percent-decoding ({exc.reason}). "
            "Percent-encode the UTF-8 bytes of the text.",
            code="invalid_encoding",
        ) from None


def check_body_encoding(content_encoding: str | None) -> None:
    """Refuse a compressed request body before it is read.

    aiohttp would inflate it while reading: a small gzip body can inflate to gigabytes, all
    of it CPU on the event loop before the size limit is reached.
    """
    if content_encoding and content_encoding.strip().lower() != "identity":
        raise RequestError(
            f"Request bodies with Content-Encoding {content_encoding!r} are not accepted: "
            "send the JSON uncompressed.",
            status=415,
            code="unsupported_content_encoding",
        )
