"""The call counts of sequences, for the rules' ``call`` condition: per process, bounded."""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["SequenceKey", "Sequences"]

SequenceKey = tuple[str, str, str]
"""(test id or "", "session" or "conversation", the session's name or the conversation's
hash): ``ScriptRequest.sequence_key``."""


class Sequences:
    """How many requests each sequence has had, for the ``max_sequences`` most recently used
    (the least recently used is forgotten: its next request counts as its first)."""

    def __init__(self, max_sequences: int) -> None:
        if max_sequences < 1:
            raise ValueError("max_sequences must be at least 1")
        self.max_sequences = max_sequences
        self._calls: OrderedDict[SequenceKey, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._calls)

    def next_call(self, key: SequenceKey) -> int:
        """Count a request of ``key``'s sequence: its position in it, from 1."""
        call = self._calls.pop(key, 0) + 1
        self._calls[key] = call
        if len(self._calls) > self.max_sequences:
            self._calls.popitem(last=False)
        return call

    def forget(self, test_id: str | None) -> int:
        """Forget the sequences of one test (None: every sequence); how many there were."""
        if test_id is None:
            count = len(self._calls)
            self._calls.clear()
            return count
        keys = [key for key in self._calls if key[0] == test_id]
        for key in keys:
            del self._calls[key]
        return len(keys)
