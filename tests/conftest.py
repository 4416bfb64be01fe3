from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from tokenstream.config import Config
from tokenstream.engine.clock import Clock, FakeClock
from tokenstream.server.app import create_app

from support import MakeClient


@pytest.fixture
def make_client(aiohttp_client: AiohttpClient) -> MakeClient:
    """A test client for an app with the given config (default: embedded) and clock."""

    async def make(
        config: Config | None = None, clock: Clock | None = None
    ) -> TestClient[web.Request, web.Application]:
        app = create_app(config, clock=clock if clock is not None else FakeClock())
        return await aiohttp_client(app)

    return make
