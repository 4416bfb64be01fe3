"""The pytest plugin: the ``tokenstream_server`` fixture and the ``tokenstream`` marker.

Registered through the ``pytest11`` entry point, so installing tokenstream is enough::

    @pytest.mark.tokenstream(rules=[{"match": "(?i)refund", "reply": "Which order?"}])
    def test_refunds(tokenstream_server):
        client = OpenAI(base_url=tokenstream_server.openai_base_url, api_key="test")
        ...
        assert tokenstream_server.journal()[-1]["rule"]["index"] == 0

Each test that asks for the fixture gets its own server (the tokenizer is loaded once per
process), configured by the marker: ``rules`` (the config's ``responses.rules``, in place of
the built-in ones) and ``config`` (a mapping merged onto the defaults, as a config file is;
replies are unpaced unless it names another ``default_profile``).

pytest imports this module at start-up in every project where tokenstream is installed:
it imports only pytest here, and the server (aiohttp, the tokenizer) when a test uses it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tokenstream.testing.server import TokenstreamServer

__all__ = ["pytest_configure", "tokenstream_server"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "tokenstream(rules=None, config=None): the rules and config of the test's "
        "tokenstream_server (rules replace responses.rules; config is merged onto the "
        "defaults)",
    )


@pytest.fixture
def tokenstream_server(request: pytest.FixtureRequest) -> Iterator[TokenstreamServer]:
    """A tokenstream server for this test, on a free port of 127.0.0.1: ``base_url``,
    ``openai_base_url``, ``add_rules()``, ``journal()``, ``clear_journal()``."""
    from tokenstream.testing.server import TokenstreamServer

    marker = request.node.get_closest_marker("tokenstream")
    if marker is not None and marker.args:
        raise pytest.UsageError("@pytest.mark.tokenstream takes keywords: rules=, config=")
    with TokenstreamServer(**(marker.kwargs if marker is not None else {})) as server:
        yield server
