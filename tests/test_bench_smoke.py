"""A quick run of scripts/bench.py, so the harness cannot rot. It asserts no timing."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
BENCH = SCRIPTS / "bench.py"


@pytest.mark.slow
def test_quick_run_covers_every_scenario(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(BENCH), "all", "--quick", "--no-pin", "--out", str(tmp_path),
         "--plot"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    results = json.loads((tmp_path / "results.json").read_text())

    (fidelity,) = results["raw"]["fidelity"]["runs"]
    for target in ("tokenstream", "baseline"):
        assert fidelity[target]["streams_ok"] == 3, target
        assert fidelity[target]["streams_failed"] == 0, target
        assert fidelity[target]["events"] == 3 * 19, target  # 20 tokens: 19 gaps per stream
        first = fidelity[target]["first_event_ms"]
        assert 0 < first["p50"] <= first["p99"] <= first["max"], target
    throughput = results["raw"]["throughput"]
    for target in ("tokenstream", "baseline"):
        assert throughput[target]["events"] > 0, target
        assert throughput[target]["errors"] == 0, target
    (memory,) = results["raw"]["memory"]["runs"]
    assert memory["tokenstream"]["holding"] == memory["baseline"]["holding"] == 10
    assert results["raw"]["proxy"]["burst"]["proxy"]["p50_ms"] > 0
    (proxied,) = results["raw"]["proxy_streams"]["runs"]
    for target in ("tokenstream", "baseline"):  # through the proxy, and straight
        assert proxied[target]["streams_ok"] == 3, target
        assert proxied[target]["ttft_ms"]["p50"] > 0, target
        assert proxied[target]["tokenstream_cpu_pct"] is not None, target
    assert throughput["tokenstream"]["server_cpu_ms_per_stream"] is not None

    assert "| fidelity" in run.stdout and "| proxy" in run.stdout
    assert {row["scenario"] for row in results["rows"]} == {
        "fidelity", "throughput", "memory", "proxy"}
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "bench.png").stat().st_size > 0


@pytest.mark.slow
def test_fidelity_with_two_workers_counts_every_server_process(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(BENCH), "fidelity", "--streams", "4", "--tokens", "10",
         "--ramp", "0.2", "--workers", "2", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["options"]["workers"] == 2
    (fidelity,) = results["raw"]["fidelity"]["runs"]
    for target in ("tokenstream", "baseline"):
        assert fidelity[target]["streams_ok"] == 4, target
        # the supervisor and its two workers, each one's CPU counted
        assert fidelity[target]["server_processes"] == 3, target
        assert len(fidelity[target]["server_cpu_s_by_process"]) == 3, target
        assert fidelity[target]["client_cpu_share_pct"] is not None, target
    assert "load generator share of all CPUs" in run.stdout


def test_the_playout_micro_benchmark_plays_every_event() -> None:
    loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    run = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_playout.py"), "--streams", "3", "--tokens", "7",
         "--rate", "1000", "--ramp", "0", "--loop", loop],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("3 streams, 21 events,"), run.stdout
    floor = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_playout.py"), "--streams", "3", "--tokens", "7",
         "--rate", "1000", "--ramp", "0", "--loop", loop, "--floor"],
        capture_output=True, text=True, timeout=60,
    )
    assert floor.returncode == 0, floor.stderr
    assert floor.stdout.startswith("3 streams, 21 events,"), floor.stdout
    assert floor.stdout.rstrip().endswith("(floor)"), floor.stdout


@pytest.mark.slow
def test_the_gc_pause_script_counts_the_collections_of_a_short_run() -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPTS / "gc_pauses.py"), "--streams", "5", "--duration", "1",
         "--tokens", "5", "--rate", "1000"],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "0 failed" in run.stdout
    rows = [line.split() for line in run.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows[-3:]] == ["0", "1", "2"], run.stdout


@pytest.mark.slow
def test_the_comparison_serves_each_revision_from_its_own_worktree(tmp_path: Path) -> None:
    root = SCRIPTS.parent
    if subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                      capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    run = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_compare.py"), "--old", "HEAD", "--new", "HEAD",
         "--rounds", "1", "--streams", "3", "--duration", "0.3", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    document = json.loads((tmp_path / "compare.json").read_text())
    for side in ("old", "new"):
        (turn,) = document["turns"][side]
        assert turn["fidelity"]["3"]["streams_ok"] == 3, side
        assert turn["throughput"]["events"] > 0, side
    assert "| lateness p99, 3 streams" in run.stdout
    worktrees = subprocess.run(["git", "-C", str(root), "worktree", "list", "--porcelain"],
                               capture_output=True, text=True).stdout
    for checkout in document["roots"].values():  # the temporary worktrees are gone
        assert not Path(checkout).exists()
        assert checkout not in worktrees


@pytest.mark.slow
def test_replay_fidelity_quick_run(tmp_path: Path) -> None:
    """``scripts/replay_fidelity.py`` records, replays and checks the bytes (it stops on a
    difference); its timing is not asserted."""
    out = tmp_path / "fidelity.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPTS / "replay_fidelity.py"), "--replies", "1", "--deltas",
         "20", "--replays", "1", "--upstream-ttft-ms", "0", "--server-root",
         str(SCRIPTS.parent), "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "byte-exact in every reply" in run.stdout
    results = json.loads(out.read_text())["results"]
    assert results["replay chat"]["n"] == results["replay anthropic"]["n"] > 20
