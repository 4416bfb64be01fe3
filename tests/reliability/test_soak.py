"""The short version of ``scripts/soak.py``: 900 mixed cycles after 900 warm-up cycles.

The full run (10,000 cycles) and its figures are in docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SOAK = Path(__file__).resolve().parents[2] / "scripts" / "soak.py"


def test_short_soak_leaves_no_task_socket_stream_or_memory_behind() -> None:
    completed = subprocess.run(
        [sys.executable, str(SOAK), "--cycles", "900", "--warmup", "900", "--json"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert completed.returncode in (0, 1), completed.stderr
    result = json.loads(completed.stdout)
    assert result["checks"] == dict.fromkeys(result["checks"], True), (result, completed.stderr)
    assert result["after"]["tasks"] == result["before"]["tasks"]
    assert result["after"]["sockets"] == result["before"]["sockets"]
    assert result["rss_growth_bytes"] < 5 * 1024 * 1024
    assert result["stalled_in_run"] == 100  # every never-reading client, and no other
    assert completed.returncode == 0
    assert "Traceback" not in completed.stderr
