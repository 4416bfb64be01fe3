"""``upstream``: the model server to forward requests to, the API it speaks, and how it is
reached (timeouts, connection limits, TLS)."""

from __future__ import annotations

import math
import ssl
from pathlib import Path
from typing import Literal

import yarl
from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from tokenstream.config.base import StrictModel

__all__ = ["UpstreamConfig", "UpstreamDialect", "ca_context"]

UpstreamDialect = Literal["openai-chat", "openai-responses", "anthropic"]
"""The API an upstream speaks: OpenAI chat completions, OpenAI Responses, Anthropic Messages."""


def ca_context(path: Path) -> ssl.SSLContext:
    """A TLS client context that trusts the CA certificates in ``path`` (PEM), and no others.

    Raises ``ValueError`` saying why the file cannot serve; the message names the file.
    """
    try:
        return ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:  # before OSError, of which it is a subclass
        raise ValueError(
            f"{path} holds no CA certificate that can be loaded ({exc.reason or exc}): give a "
            "PEM file with the certificate of the CA that signed the upstream's"
        ) from None
    except OSError as exc:
        raise ValueError(f"{path} cannot be read: {exc.strerror or exc}") from None


class UpstreamConfig(StrictModel):
    """A model server to forward requests to (``sources.upstream``)."""

    base_url: str | None = Field(
        default=None, description="API root, e.g. https://api.openai.com/v1; null = no upstream"
    )
    dialect: UpstreamDialect = Field(
        default="openai-chat",
        description="the API the upstream speaks: openai-chat (POST <base_url>/chat/completions"
        ", Authorization: Bearer), openai-responses (POST <base_url>/responses, Bearer) or "
        "anthropic (POST <base_url>/messages, x-api-key and anthropic-version); requests in "
        "any client dialect are translated to it",
    )
    api_key_env: str = Field(
        default="OPENAI_API_KEY",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="environment variable with the upstream key; unset = no key is sent",
    )
    forward_client_auth: bool = Field(
        default=False,
        description="send the client's own key (Authorization: Bearer or x-api-key) upstream, "
        "in the header the upstream's dialect wants",
    )
    model: str | None = Field(
        default=None, min_length=1, description="replaces the model a request names"
    )
    profile: str = Field(
        default="smooth", description="pacing profile of proxied replies that name none"
    )
    connect_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    first_byte_timeout_s: float = Field(
        default=300.0, gt=0, le=3600, description="request sent -> first event of the reply"
    )
    idle_timeout_s: float = Field(
        default=60.0, gt=0, le=3600, description="longest silence while reading the reply"
    )
    max_connections: int = Field(default=1000, ge=1, le=100_000)
    max_connections_per_host: int = Field(default=0, ge=0, le=100_000, description="0 = no limit")
    verify_tls: bool = Field(
        default=True, description="check the upstream's TLS certificate; false only for tests"
    )
    ca_file: Path | None = Field(
        default=None,
        description="PEM file of the CAs trusted for the upstream instead of the system's, "
        "relative to the config file",
    )
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        le=1_073_741_824,
        description="largest answer passed on whole (stream: false, models); beyond it: 502",
    )
    max_event_chars: int = Field(
        default=1 << 20,
        ge=1024,
        le=1 << 30,
        description="longest line or event of a streamed answer; beyond: the stream ends in error",
    )

    @field_validator("connect_timeout_s", "first_byte_timeout_s", "idle_timeout_s")
    @classmethod
    def _finite_timeout(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("base_url")
    @classmethod
    def _api_root(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            url = yarl.URL(value)
        except ValueError as exc:
            raise ValueError(f"not a URL: {exc}") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("give an http:// or https:// URL with a host, e.g. "
                             "https://api.openai.com/v1")
        if url.user is not None or url.password is not None:
            raise ValueError("must not hold credentials: put the key in the environment "
                             "variable named by upstream.api_key_env")
        if url.query_string or url.fragment:
            raise ValueError("must not have a query or fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _ca_file_needs_verification(self) -> UpstreamConfig:
        if self.ca_file is not None and not self.verify_tls:
            raise ValueError(
                "upstream.ca_file is not used with upstream.verify_tls: false; remove one of them"
            )
        return self
