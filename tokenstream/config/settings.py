"""The settings: every section of the config file as a validated, frozen model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import regex
from pydantic import (
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tokenstream.config import defaults
from tokenstream.config.base import StrictModel
from tokenstream.config.replay import RecordConfig, ReplayConfig, record_replay_problems
from tokenstream.config.rules import ReplyRule, RuleConfig, ToolCallConfig, compile_rule
from tokenstream.config.store import ResumeConfig, store_problem
from tokenstream.config.upstream import UpstreamConfig
from tokenstream.engine.pacer import PacingProfile
from tokenstream.errors import ConfigError

__all__ = [
    "Config",
    "ControlConfig",
    "ReplyRule",
    "ResponsesConfig",
    "RuleConfig",
    "ServerConfig",
    "TokenizerConfig",
    "ToolCallConfig",
    "api_key_problem",
]


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


def api_key_problem(key: str) -> str | None:
    """Why ``key`` cannot be an API key, or None. The message never contains the key."""
    if len(key) < 8:
        return "is shorter than 8 characters"
    if any(char.isspace() or not char.isprintable() for char in key):
        return "contains whitespace or a control character"
    if not key.isascii():
        return "contains non-ASCII characters (HTTP headers are ASCII)"
    return None


_SERVED_PATHS = frozenset({"/healthz", "/metrics"})
_SERVED_PREFIXES = ("/v1/", "/static/")


class ServerConfig(StrictModel):
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8080, ge=0, le=65535)
    heartbeat_s: float | None = Field(
        default=15.0, ge=0, le=3600, description="comment line after this much silence; 0 = off"
    )
    sentinel: str = Field(default="[DONE]", min_length=1, description="data of the last event")
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=1_073_741_824)
    ai_sdk_chat_path: str = Field(
        default="/api/chat", description="where the Vercel AI SDK's useChat posts its messages"
    )
    # --- reliability and security (docs/RELIABILITY.md) ---
    send_timeout_s: float = Field(
        default=10.0, gt=0, le=3600, description="a write that cannot finish in this time ends it"
    )
    max_buffered_bytes: int = Field(
        default=65_536, ge=1024, le=67_108_864, description="output queued per stream, at most"
    )
    max_concurrent_streams: int | None = Field(
        default=1000, ge=0, le=1_000_000, description="beyond it: 429; 0 or null = no limit"
    )
    retry_after_s: int = Field(default=1, ge=1, le=3600, description="Retry-After with a 429")
    max_streams_per_client: int | None = Field(
        default=None, ge=0, le=1_000_000,
        description="streams one API key (or, without keys, one address) may run at once",
    )
    body_timeout_s: float = Field(
        default=60.0, gt=0, le=3600, description="a request body must arrive within this time"
    )
    keepalive_timeout_s: float = Field(
        default=75.0, gt=0, le=3600, description="an idle keep-alive connection is closed after"
    )
    max_prompt_tokens: int | None = Field(default=128_000, ge=0, description="0/null = no limit")
    max_reply_tokens: int | None = Field(default=16_384, ge=0, description="0/null = no limit")
    max_stream_duration_s: float | None = Field(
        default=600.0, ge=0, le=86_400, description="a longer reply is ended; 0/null = no limit"
    )
    shutdown_grace_s: float = Field(
        default=10.0, ge=0, le=3600, description="on SIGTERM/SIGINT, streams may finish this long"
    )
    api_keys: list[SecretStr] = Field(
        default_factory=list, description="accepted Bearer keys; none = no authentication"
    )
    api_keys_file: str | None = Field(
        default=None, description="file of keys, one per line, relative to the config file"
    )
    open_paths: list[str] = Field(
        default_factory=lambda: ["/", "/healthz", "/static/*", "/favicon.ico"],
        description="paths served without a key when keys are set; 'prefix*' matches a prefix",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="origins a browser may call the API from; '*' = any"
    )
    log_level: LogLevel = "INFO"
    access_log_level: LogLevel | Literal["OFF"] = Field(
        default="INFO", description="level of the one-line-per-request access log; OFF = none"
    )

    @field_validator("heartbeat_s", "max_stream_duration_s", "send_timeout_s", "shutdown_grace_s")
    @classmethod
    def _zero_means_off(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        if info.field_name in ("send_timeout_s", "shutdown_grace_s"):
            return value
        return value or None

    @field_validator(
        "max_concurrent_streams", "max_prompt_tokens", "max_reply_tokens", "max_streams_per_client"
    )
    @classmethod
    def _zero_means_unlimited(cls, value: int | None) -> int | None:
        return value or None

    @field_validator("api_keys")
    @classmethod
    def _usable_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for index, key in enumerate(value):
            problem = api_key_problem(key.get_secret_value())
            if problem:
                raise ValueError(f"key #{index + 1} {problem}")  # never echo the key itself
        return value

    @field_validator("open_paths")
    @classmethod
    def _absolute_paths(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"{path!r}: a path starts with '/'")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not regex.fullmatch(r"https?://[^/\s?#]+", origin):
                raise ValueError(
                    f"{origin!r}: an origin is scheme://host[:port] with no path or trailing "
                    "slash (e.g. 'http://localhost:5173'), or '*'"
                )
        return value
    # --- end reliability and security ---

    @field_validator("ai_sdk_chat_path")
    @classmethod
    def _own_path(cls, value: str) -> str:
        segments = value.split("/")[1:]
        if (
            not regex.fullmatch(r"(/[A-Za-z0-9._~-]+)+", value)
            or "." in segments
            or ".." in segments
        ):
            raise ValueError(
                f"{value!r}: a path such as '/api/chat': '/'-separated segments of letters, "
                "digits, '.', '_', '~' and '-' (not '.' or '..'), with no trailing slash"
            )
        if value in _SERVED_PATHS or value.startswith(_SERVED_PREFIXES):
            raise ValueError(f"{value!r} is a path tokenstream serves already")
        return value

    @field_validator("sentinel")
    @classmethod
    def _single_line(cls, value: str) -> str:
        if "\n" in value or "\r" in value:
            raise ValueError("must be one line")
        return value


class TokenizerConfig(StrictModel):
    encoding: str = "cl100k_base"


class ResponsesConfig(StrictModel):
    source: Literal["scripted", "echo"] = "scripted"
    default_reply: str = defaults.DEFAULT_REPLY
    rules: list[RuleConfig] = Field(
        default_factory=lambda: [RuleConfig.model_validate(rule) for rule in defaults.DEFAULT_RULES]
    )
    strict: bool = Field(
        default=False,
        description="true: a request no rule matches gets 404 no_matching_rule, not the "
        "default reply",
    )
    max_sequences: int = Field(
        default=10_000, ge=1, le=10_000_000,
        description="sequences (sessions, conversations) whose call count is kept; the least "
        "recently used is forgotten",
    )


class ControlConfig(StrictModel):
    """The control API under ``/_tokenstream/``: the request journal and run-time rules."""

    enabled: bool = Field(default=True, description="false: no control API and no journal")
    max_journal_entries: int = Field(
        default=1000, ge=0, le=1_000_000,
        description="requests the journal keeps, the newest; 0 = no journal",
    )
    max_journal_body_bytes: int = Field(
        default=16_384, ge=0, le=16_777_216, description="of each request's body, at most"
    )
    max_runtime_rules: int = Field(
        default=1000, ge=0, le=100_000,
        description="rules added at run time, kept at most; the oldest are dropped",
    )


class Config(StrictModel):
    server: ServerConfig = Field(default_factory=ServerConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    default_profile: str = defaults.DEFAULT_PROFILE
    profiles: dict[str, PacingProfile] = Field(
        default_factory=lambda: {
            name: PacingProfile(**fields) for name, fields in defaults.PROFILES.items()
        }
    )
    responses: ResponsesConfig = Field(default_factory=ResponsesConfig)
    upstream: UpstreamConfig = Field(default_factory=UpstreamConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    resume: ResumeConfig = Field(default_factory=ResumeConfig)
    store: str = Field(
        default="memory",
        description="where stream logs, the journal and the concurrency limit live: memory "
        "(this process) or redis://HOST:PORT/DB, shared by every worker and machine using it",
    )
    store_prefix: str = Field(
        default="tokenstream", pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="the Redis keys' prefix (servers with another prefix share nothing)",
    )
    record: RecordConfig = Field(default_factory=RecordConfig)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    models: list[str] = Field(default_factory=lambda: ["tokenstream-1"], min_length=1)
    strict_models: bool = Field(
        default=False, description="true: a request for a model not in 'models' gets 404"
    )
    base_dir: Path = Field(
        default=Path("."), exclude=True, description="resolves reply_file and upstream.ca_file"
    )

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        problem = store_problem(value)
        if problem is not None:
            raise ValueError(f"store {problem}")
        return value

    @field_validator("profiles")
    @classmethod
    def _profile_names(cls, value: dict[str, PacingProfile]) -> dict[str, PacingProfile]:
        if not value:
            raise ValueError("at least one profile is needed")
        for name in value:
            if not regex.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
                raise ValueError(f"profile name {name!r}: use 1-64 letters, digits, '_', '-', '.'")
        return value

    @model_validator(mode="after")
    def _default_profile_exists(self) -> Config:
        if self.default_profile not in self.profiles:
            raise ValueError(
                f"default_profile {self.default_profile!r} is not among the profiles "
                f"({', '.join(sorted(self.profiles))})"
            )
        return self

    @model_validator(mode="after")
    def _upstream_profile_exists(self) -> Config:
        if self.upstream.base_url is not None and self.upstream.profile not in self.profiles:
            raise ValueError(
                f"upstream.profile {self.upstream.profile!r} is not among the profiles "
                f"({', '.join(sorted(self.profiles))})"
            )
        return self

    @model_validator(mode="after")
    def _rule_profiles_exist(self) -> Config:
        for index, rule in enumerate(self.responses.rules):
            problem = self.unknown_profile(rule.profile)
            if problem:
                raise ValueError(f"responses.rules.{index}.profile: {problem}")
        return self

    def unknown_profile(self, name: str | None) -> str | None:
        """Why ``name`` (a rule's profile) is not a profile here, or None."""
        if name is None or name in self.profiles:
            return None
        return f"{name!r} is not among the profiles ({', '.join(sorted(self.profiles))})"

    @model_validator(mode="after")
    def _record_replay_fit(self) -> Config:
        problems = record_replay_problems(
            self.record, self.replay, upstream_base_url=self.upstream.base_url,
            profiles=self.profiles,
        )
        if problems:
            key, reason = problems[0]
            raise ValueError(f"{key}: {reason}")
        return self

    @property
    def default_source(self) -> str:
        """The source of a request that names none: the upstream whenever one is configured."""
        return "upstream" if self.upstream.base_url else self.responses.source

    def reply_rules(self) -> list[ReplyRule]:
        """Compile the scripted rules once; read reply files relative to the config file."""
        rules = []
        for index, rule in enumerate(self.responses.rules):
            if rule.reply is not None:
                text = rule.reply
            elif rule.reply_file is not None:
                path = self.base_dir / rule.reply_file
                try:
                    text = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise ConfigError(
                        str(path), [(f"responses.rules.{index}.reply_file", str(exc))]
                    ) from exc
            else:
                text = ""
            rules.append(compile_rule(rule, text, origin="config", index=index))
        return rules


