"""Configuration: the settings model, its embedded defaults, and loading a YAML file."""

from tokenstream.config.loading import embedded_defaults, load_config, validate_mapping
from tokenstream.config.replay import OnMiss, RecordConfig, ReplayConfig, record_replay_problems
from tokenstream.config.rules import RULE_DIALECTS, RuleDialect, compile_rule
from tokenstream.config.settings import (
    Config,
    ControlConfig,
    ReplyRule,
    ResponsesConfig,
    RuleConfig,
    ServerConfig,
    TokenizerConfig,
    ToolCallConfig,
    api_key_problem,
)
from tokenstream.config.store import ResumeConfig
from tokenstream.config.upstream import UpstreamConfig, UpstreamDialect, ca_context

__all__ = [
    "RULE_DIALECTS",
    "Config",
    "ControlConfig",
    "OnMiss",
    "RecordConfig",
    "ReplayConfig",
    "ReplyRule",
    "ResponsesConfig",
    "ResumeConfig",
    "RuleConfig",
    "RuleDialect",
    "ServerConfig",
    "TokenizerConfig",
    "ToolCallConfig",
    "UpstreamConfig",
    "UpstreamDialect",
    "api_key_problem",
    "ca_context",
    "compile_rule",
    "embedded_defaults",
    "load_config",
    "record_replay_problems",
    "validate_mapping",
]
