"""Configuration: one YAML file, merged onto the embedded defaults and validated at start-up.

A file only needs the keys it changes: mappings are merged key by key onto the defaults
(so a file can add a profile and keep the built-in ones), lists and scalars replace them.
Any problem stops start-up with a ``ConfigError`` naming the file, the key and the reason.
"""

from __future__ import annotations

import copy
import math
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import regex
import yaml
import yarl
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tokenstream.config import defaults
from tokenstream.engine.pacer import PacingProfile
from tokenstream.errors import ConfigError

__all__ = [
    "Config",
    "ReplyRule",
    "ResponsesConfig",
    "RuleConfig",
    "ServerConfig",
    "TokenizerConfig",
    "UpstreamConfig",
    "api_key_problem",
    "ca_context",
    "embedded_defaults",
    "load_config",
    "validate_mapping",
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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8080, ge=0, le=65535)
    heartbeat_s: float | None = Field(
        default=15.0, ge=0, le=3600, description="comment line after this much silence; 0 = off"
    )
    sentinel: str = Field(default="[DONE]", min_length=1, description="data of the last event")
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=1_073_741_824)
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

    @field_validator("sentinel")
    @classmethod
    def _single_line(cls, value: str) -> str:
        if "\n" in value or "\r" in value:
            raise ValueError("must be one line")
        return value


class TokenizerConfig(_Strict):
    encoding: str = "cl100k_base"


class RuleConfig(_Strict):
    match: str = Field(description="regular expression searched in the last user message")
    reply: str | None = None
    reply_file: str | None = Field(
        default=None, description="file with the reply, relative to the config file"
    )

    @field_validator("match")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            regex.compile(value)
        except regex.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _one_reply(self) -> RuleConfig:
        if (self.reply is None) == (self.reply_file is None):
            raise ValueError("give exactly one of 'reply' or 'reply_file'")
        return self


@dataclass(frozen=True, slots=True)
class ReplyRule:
    """A ``RuleConfig`` compiled (``Config.reply_rules``): what the scripted source matches."""

    pattern: regex.Pattern[str]
    reply: str


class ResponsesConfig(_Strict):
    source: Literal["scripted", "echo"] = "scripted"
    default_reply: str = defaults.DEFAULT_REPLY
    rules: list[RuleConfig] = Field(
        default_factory=lambda: [RuleConfig(**rule) for rule in defaults.DEFAULT_RULES]
    )


class UpstreamConfig(_Strict):
    """An OpenAI-compatible server to forward chat completions to (``sources.upstream``)."""

    base_url: str | None = Field(
        default=None, description="API root, e.g. https://api.openai.com/v1; null = no upstream"
    )
    api_key_env: str = Field(
        default="OPENAI_API_KEY",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="environment variable with the upstream key; unset = no Authorization",
    )
    forward_client_auth: bool = Field(
        default=False, description="send the client's own Authorization header upstream"
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
    max_line_chars: int = Field(
        default=1 << 20,
        ge=1024,
        le=1 << 30,
        description="longest line of a streamed answer; beyond it the stream ends with an error",
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


class Config(_Strict):
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
    models: list[str] = Field(default_factory=lambda: ["tokenstream-1"], min_length=1)
    strict_models: bool = Field(
        default=False, description="true: a request for a model not in 'models' gets 404"
    )
    base_dir: Path = Field(
        default=Path("."), exclude=True, description="resolves reply_file and upstream.ca_file"
    )

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
            else:
                assert rule.reply_file is not None  # guaranteed by RuleConfig._one_reply
                path = self.base_dir / rule.reply_file
                try:
                    text = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise ConfigError(
                        str(path), [(f"responses.rules.{index}.reply_file", str(exc))]
                    ) from exc
            rules.append(ReplyRule(regex.compile(rule.match), text))
        return rules


def embedded_defaults() -> Config:
    return Config()


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _problems(error: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for item in error.errors(include_url=False):
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        reason = item["msg"]
        if item["type"] == "extra_forbidden":
            reason = "unknown key (check its spelling and where it is nested)"
        problems.append((key, reason))
    return problems


def validate_mapping(data: dict[str, Any], source: str, base_dir: Path = Path(".")) -> Config:
    """Validate a config mapping merged onto the defaults; raise ``ConfigError`` on problems."""
    defaults_dump = embedded_defaults().model_dump(mode="json", exclude={"base_dir"})
    merged = _deep_merge(defaults_dump, data)
    if "profiles" in data and isinstance(data["profiles"], dict):
        # a profile given in the file is whole: fields it omits take the field defaults,
        # not the values of a built-in profile of the same name
        merged["profiles"] = {**defaults_dump["profiles"], **data["profiles"]}
    try:
        config = Config.model_validate({**merged, "base_dir": base_dir})
        config.reply_rules()
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc)) from None
    return _with_ca_file(config, source)


def _with_ca_file(config: Config, source: str) -> Config:
    """``upstream.ca_file`` resolved relative to the config file, and checked at start-up."""
    ca_file = config.upstream.ca_file
    if ca_file is None:
        return config
    path = config.base_dir / ca_file
    try:
        ca_context(path)
    except ValueError as exc:
        raise ConfigError(source, [("upstream.ca_file", str(exc))]) from None
    upstream = config.upstream.model_copy(update={"ca_file": path})
    return config.model_copy(update={"upstream": upstream})


def load_config(path: str | Path | None = None) -> Config:
    """Load ``path`` (YAML) onto the embedded defaults, or the defaults alone when None."""
    if path is None:
        return embedded_defaults()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [("(file)", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [("(file)", str(exc))]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(str(path), [(where, f"not valid YAML: {problem}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), [("(top level)", "must be a mapping of sections")])
    return validate_mapping(data, str(path), path.parent)
