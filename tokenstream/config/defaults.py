"""The embedded defaults: what tokenstream serves with no config file.

``config/default.yaml`` in the repository spells out exactly these values (a test checks
that the two agree), so it is both documentation and a starting point for a custom file.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_PROFILE", "DEFAULT_REPLY", "DEFAULT_RULES", "PROFILES"]

DEFAULT_PROFILE = "chatgpt"

PROFILES: dict[str, dict[str, Any]] = {
    "chatgpt": {
        "description": "Feels like a hosted chat model: ~50 tokens/s, 350 ms to first token, "
        "mild jitter, short pauses at sentence ends.",
        "tokens_per_second": 50,
        "ttft_ms": 350,
        "jitter": 0.25,
        "seed": None,
        "chunk_tokens": 1,
        "pause_ms": 60,
        "newline_pause_ms": 90,
    },
    "fast": {
        "description": "A fast small model: 150 tokens/s, 120 ms to first token.",
        "tokens_per_second": 150,
        "ttft_ms": 120,
        "jitter": 0.15,
        "seed": None,
        "chunk_tokens": 1,
        "pause_ms": 0,
        "newline_pause_ms": None,
    },
    "slow": {
        "description": "A loaded or large model: 12 tokens/s, 1.5 s to first token, "
        "uneven rhythm.",
        "tokens_per_second": 12,
        "ttft_ms": 1500,
        "jitter": 0.5,
        "seed": None,
        "chunk_tokens": 1,
        "pause_ms": 250,
        "newline_pause_ms": 400,
    },
    "bursty": {
        "description": "Chunks of 8 tokens with large gaps, like a batching server.",
        "tokens_per_second": 40,
        "ttft_ms": 600,
        "jitter": 0.8,
        "seed": None,
        "chunk_tokens": 8,
        "pause_ms": 0,
        "newline_pause_ms": None,
    },
    "steady": {
        "description": "Exactly 50 tokens/s, no jitter, no pauses, fixed seed: for "
        "measurements.",
        "tokens_per_second": 50,
        "ttft_ms": 0,
        "jitter": 0,
        "seed": 0,
        "chunk_tokens": 1,
        "pause_ms": 0,
        "newline_pause_ms": None,
    },
    "smooth": {
        "description": "For an upstream model (tokenstream serve --upstream): evens out its "
        "bursts into a steady 40 tokens/s, speeding up to the upstream's own rate when it is "
        "faster, never more than 750 ms behind it.",
        "tokens_per_second": 40,
        "ttft_ms": 0,
        "jitter": 0,
        "seed": None,
        "chunk_tokens": 1,
        "pause_ms": 0,
        "newline_pause_ms": None,
        "max_buffer_ms": 750,
    },
    "instant": {
        "description": "Unpaced: every token as fast as the server can write.",
        "tokens_per_second": None,
        "ttft_ms": 0,
        "jitter": 0,
        "seed": None,
        "chunk_tokens": 1,
        "pause_ms": 0,
        "newline_pause_ms": None,
    },
}
PROFILES["flaky"] = {
    **PROFILES["chatgpt"],
    "description": "A hosted model on a bad day: the chatgpt pace with seeded random faults "
    "(errors, cut streams, stalls), the same sequence in every run.",
    "chaos": "seed=1,error=0.15,truncate=0.1,stall=0.15",
}

DEFAULT_REPLY = (
    "This is tokenstream, a stand-in for a language model. It splits a reply into real "
    "tokenizer tokens and streams them as server-sent events, timed like a model typing. "
    "Ask for a greeting, markdown, code, Chinese, emoji or a long answer to see more."
)

DEFAULT_RULES: list[dict[str, Any]] = [
    {
        "match": r"(?i)\b(hello|hi|hey)\b",
        "reply": "Hello! I'm tokenstream. I stream replies token by token, so you can see how "
        "your interface handles the typing effect. Try asking for markdown, code, "
        "Chinese, emoji or a long answer.",
    },
    {
        "match": r"(?i)\bcode\b",
        "reply": "Here is a small Python function:\n\n```python\ndef fibonacci(n: int) -> "
        "list[int]:\n    \"\"\"Return the first n Fibonacci numbers.\"\"\"\n    numbers = "
        "[0, 1]\n    while len(numbers) < n:\n        numbers.append(numbers[-1] + "
        "numbers[-2])\n    return numbers[:n]\n```\n\nCall `fibonacci(10)` to get the first "
        "ten.",
    },
    {
        "match": r"(?i)\bmarkdown\b",
        "reply": "# Streaming markdown\n\nA renderer must cope with **partial** syntax:\n\n"
        "1. a heading that arrives in pieces,\n2. *emphasis* split across tokens,\n3. a "
        "table:\n\n| token | bytes |\n|-------|-------|\n| ` hello` | 6 |\n| `你` | 3 |\n\n"
        "> Quotes, too.",
    },
    {
        "match": r"(?i)chinese|中文",
        "reply": "我懒得写你谷搜到处皆只因你太美。"
        "流式传输时，一个汉字的 UTF-8 字节可能被拆进两个词元，"
        "但客户端拼接出的文本必须与原文一字不差！",
    },
    {
        "match": r"(?i)emoji",
        "reply": "Emoji are several code points and many bytes: 👋 🧑‍💻 👩‍👩‍👧‍👦 🏳️‍🌈 🇯🇵 "
        "✨. Family and flag sequences are joined by zero-width joiners or regional "
        "indicators, and their bytes are split across tokens. 🎉",
    },
    {
        "match": r"(?i)\blong\b",
        "reply": "Streaming changes how an answer feels. When a reply appears all at once "
        "after several seconds, the wait feels longer than it was; when the same reply "
        "starts after a few hundred milliseconds and flows at reading speed, people start "
        "reading at once and rarely notice the total time.\n\nThree numbers describe the "
        "effect. Time to first token is how long the screen stays empty. Tokens per second "
        "is the reading pace; around fifty feels fluent, below fifteen feels laboured. "
        "Jitter is how even the rhythm is: perfectly regular output looks mechanical, while "
        "a little unevenness looks like thinking.\n\nA good chat interface also handles the "
        "awkward cases: a stream that stalls, one that ends early with an error, markdown "
        "that is half written, and a user who presses stop. tokenstream lets you produce "
        "each of these on demand, offline and repeatably, so the interface can be tested "
        "before a real model is ever called.",
    },
    {
        "match": r"(?i)\bweather\b",
        "tool_result": r"(?s).",
        "reply": "Thanks, the get_weather tool answered. That is the end of a scripted agent "
        "loop: question, tool call, tool result, answer.",
    },
    {
        "match": r"(?i)\bweather\b",
        "reasoning": "The user asks about the weather. I have a get_weather tool, so I call "
        "it for Paris.",
        "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}],
    },
]
