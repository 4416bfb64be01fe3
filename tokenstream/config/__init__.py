"""Configuration: the settings model, its embedded defaults, and loading a YAML file."""

from tokenstream.config.settings import (
    Config,
    ReplyRule,
    ResponsesConfig,
    RuleConfig,
    ServerConfig,
    TokenizerConfig,
    UpstreamConfig,
    api_key_problem,
    ca_context,
    embedded_defaults,
    load_config,
    validate_mapping,
)

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
