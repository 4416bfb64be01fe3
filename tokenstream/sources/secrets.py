"""Keeping keys out of what tokenstream says: every error text that could hold one passes here."""

from __future__ import annotations

__all__ = ["redact"]

_REDACTED = "[redacted]"


def redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, _REDACTED)
    return text
