"""Rules added at run time (``POST /_tokenstream/rules``): bounded, each scoped to a test.

They are tried before the config's rules, the most recently added first (in the order
each request gave them), so a test can override a rule it added earlier. A rule added with
an ``X-Tokenstream-Test-Id`` matches only requests with the same header; one added without
matches every request.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from itertools import count

from tokenstream.config import ReplyRule, RuleConfig, compile_rule

__all__ = ["RuntimeRules"]


class RuntimeRules:
    """At most ``max_rules`` rules; beyond that the oldest are dropped."""

    def __init__(self, max_rules: int) -> None:
        self.max_rules = max_rules
        self._rules: deque[ReplyRule] = deque(maxlen=max_rules)  # the newest first
        self._numbers = count(1)

    def __len__(self) -> int:
        return len(self._rules)

    def add(self, rules: Sequence[RuleConfig], test_id: str | None) -> list[ReplyRule]:
        """Compile and add ``rules`` (validated, without ``reply_file``) in front of the
        others; the rules as added, each with its number (``ReplyRule.index``)."""
        if len(rules) > self.max_rules:
            raise ValueError(
                f"at most {self.max_rules} rules can be added (control.max_runtime_rules)"
            )
        added = [
            compile_rule(rule, rule.reply or "", origin="runtime", index=next(self._numbers),
                         test_id=test_id)
            for rule in rules
        ]
        self._rules.extendleft(reversed(added))  # drops the oldest beyond max_rules
        return added

    def clear(self, test_id: str | None) -> int:
        """Remove one test's rules (None: every rule); how many were removed."""
        before = len(self._rules)
        if test_id is None:
            self._rules.clear()
        else:
            kept = [rule for rule in self._rules if rule.test_id != test_id]
            self._rules.clear()
            self._rules.extend(kept)
        return before - len(self._rules)

    def for_test(self, test_id: str | None) -> Iterator[ReplyRule]:
        """The rules a request of ``test_id`` may match, in the order they are tried."""
        for rule in self._rules:
            if rule.test_id is None or rule.test_id == test_id:
                yield rule
