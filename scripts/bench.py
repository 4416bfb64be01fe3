#!/usr/bin/env python3
"""Benchmark tokenstream against a same-run baseline, measured at the client.

Each measurement starts a fresh server in its own process (pinned to CPU 0 with taskset
when the machine has two or more cores), and a load generator (scripts/bench_load.py, raw
asyncio protocols that only timestamp event boundaries) in one or more other processes
(pinned to the other cores). Every scenario runs twice, against tokenstream and against
the baseline (scripts/bench_baseline.py: a minimal aiohttp handler writing the same bytes
with one ``asyncio.sleep`` per token per stream), and prints both side by side.

    python scripts/bench.py fidelity   --streams 1,100,500,1000,2000,5000 [--ramp 1]
    python scripts/bench.py throughput --streams 100 --duration 5
    python scripts/bench.py memory     --streams 0,1000,5000,10000
    python scripts/bench.py proxy
    python scripts/bench.py all [--quick] [--plot]

``--workers N`` serves with ``tokenstream serve --workers N`` and the baseline with N
processes of its own on the port (``SO_REUSEPORT``); the server's CPU and memory are then
every process of its tree added up, and when the machine has no CPU left over for the load
generator, nothing is pinned and it shares the CPUs with the workers (``Placement``).

``--server-root DIR`` serves tokenstream from another checkout's source (its ``tokenstream``
package first on the server's path); the harness is still this one. scripts/bench_compare.py
uses it to compare two commits in one run.

Results: one table on stdout, raw figures in OUT/results.json, and with ``--plot`` a PNG
(OUT/bench.png; needs matplotlib, ``pip install -e '.[bench]'``). See docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGETS = ("tokenstream", "baseline")
_WORDS = (
    "the", "stream", "of", "tokens", "arrives", "at", "a", "steady", "pace", "so", "that",
    "every", "client", "sees", "the", "reply", "appear", "word", "by", "word", "as", "if", "a",
    "model", "were", "typing", "it", "out", "in", "real", "time", "while", "the", "server",
    "keeps", "thousands", "of", "such", "streams", "open", "at", "once", "without", "falling",
    "behind", "its", "schedule",
)


# ---------------------------------------------------------------- the reply and its bytes


@dataclass(frozen=True)
class Reply:
    """A fixed reply of ``tokens`` tokens, the prompt that echoes it, and its writes."""

    tokens: int
    prompt: str
    writes: list[str]  # what one stream writes, in order: one per token, then the closing one

    @property
    def events_per_write(self) -> list[int]:
        return [w.count("\n\n") for w in self.writes]

    @property
    def token_event_index(self) -> list[int]:
        """For each token write, the index of its last event in the stream."""
        indices, total = [], 0
        for count in self.events_per_write[:-1]:
            total += count
            indices.append(total - 1)
        return indices

    @property
    def events(self) -> int:
        return sum(self.events_per_write)


def make_reply(tokens: int) -> Reply:
    """A reply of exactly ``tokens`` tokens (served by a scripted rule, see ``server``)."""
    sys.path.insert(0, str(ROOT))
    from tokenstream.dialects.openai_chat import OpenAIChunkFormat
    from tokenstream.engine.events import Finish
    from tokenstream.engine.tokenizer import Tokenizer, load_encoding
    from tokenstream.sse.ids import EventIds

    tokenizer = Tokenizer(load_encoding("cl100k_base"))
    words = (_WORDS * (tokens // len(_WORDS) + 2))[: tokens + 8]
    pieces = tokenizer.pieces(" ".join(words))
    prompt = "".join(piece.text for piece in pieces[:tokens]).rstrip()
    pieces = tokenizer.pieces(prompt)
    if sum(piece.tokens for piece in pieces) != tokens or len(pieces) != tokens:
        raise SystemExit(f"bench: could not build a prompt of exactly {tokens} tokens")
    # what GET /v1/stream?format=openai sends: each event with its id: <stream id>:<n> line
    # (numbered as the runner numbers them; a stream id is 16 characters)
    wire = OpenAIChunkFormat(model="tokenstream-1", include_usage=False)
    wire.ids = EventIds("x" * 16)
    writes = [wire.piece(piece).decode("utf-8") for piece in pieces]
    writes.append((wire.event(Finish("stop")) + wire.end()).decode("utf-8"))
    return Reply(tokens, prompt, writes)


def stream_path(reply: Reply, tokens_per_second: float) -> str:
    query = {
        "prompt": "bench",  # the scripted rule that replies with ``reply.prompt``
        "format": "openai",
        "tokens_per_second": f"{tokens_per_second:g}",
        "ttft_ms": "0",
        "jitter": "0",
        "seed": "1",
    }
    return "/v1/stream?" + urlencode(query)


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Placement:
    """Which CPUs the server and the load generators run on (None: not pinned).

    One server process gets the first CPU and the load generators the others. N worker
    processes get the first N CPUs when at least one is left for the load generators;
    otherwise (``--workers 2`` on two CPUs) nothing is pinned: the workers and the load
    generators share every CPU and the scheduler places them (``shared``), which is what a
    load test on the server's own machine gets. Pinning each worker to a CPU of its own
    would only add a constraint: the load generator still needs part of both CPUs.
    """

    server: str | None
    clients: str | None
    shared: bool = False  # the load generators share the server's CPUs

    @classmethod
    def choose(cls, pin: bool, workers: int = 1) -> Placement:
        cpus = sorted(os.sched_getaffinity(0))
        if not pin or len(cpus) < 2 or shutil.which("taskset") is None:
            return cls(None, None, shared=True)
        if len(cpus) <= workers:
            return cls(None, None, shared=True)
        return cls(",".join(map(str, cpus[:workers])), ",".join(map(str, cpus[workers:])))

    @staticmethod
    def wrap(cpus: str | None, argv: list[str]) -> list[str]:
        return argv if cpus is None else ["taskset", "-c", cpus, *argv]


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (field 3, the state, first)."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
        return file.read().rsplit(")", 1)[1].split()


def process_tree(root: int) -> list[int]:
    """``root`` and every process descended from it, found by their parents in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat_fields(int(entry.name))[1])
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        children.setdefault(parent, []).append(int(entry.name))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, ()))
    return tree


@dataclass
class Server:
    target: str
    port: int
    process: subprocess.Popen[bytes]
    workers: int = 1

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        """CPU time of the server's process and its running children (its workers): a
        process's own /proc/PID/stat counts a child only once it has been waited for."""
        return sum(self.cpu_by_process().values())

    def cpu_by_process(self) -> dict[int, float]:
        """CPU seconds (user + system) of each process of the server's tree, by PID."""
        out = {}
        for pid in process_tree(self.pid):
            with contextlib.suppress(OSError, IndexError):
                fields = _stat_fields(pid)
                out[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return out

    def rss_kib(self) -> int:
        """Resident memory of the process and its children, added up (pages they share,
        such as the interpreter's, count once per process)."""
        total = 0
        for pid in process_tree(self.pid):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/status",
                                                     encoding="ascii") as file:
                total += next((int(line.split()[1]) for line in file
                               if line.startswith("VmRSS:")), 0)
        if not total:
            raise RuntimeError("no VmRSS")
        return total

    def health(self) -> dict[str, Any]:
        return dict(json.loads(self.get("/healthz")))

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as r:
            return bytes(r.read())


def server_env(root: Path) -> dict[str, str]:
    """The environment of a tokenstream server whose package comes from ``root``: first on
    its path, ahead of the editable install's finder (which Python consults last)."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(root) if not path else f"{root}{os.pathsep}{path}"}


@contextlib.contextmanager
def server(target: str, options: Options, reply: Reply, workdir: Path, *,
           cpus: str | bool | None = True, upstream: str | None = None,
           workers: int | None = None) -> Iterator[Server]:
    """Start one server. ``cpus``: True for the server's CPU, else a taskset list (None: any).

    ``upstream`` (tokenstream only) makes it a proxy in front of that base URL. ``workers``:
    its processes (None: the run's ``--workers``).
    """
    port = free_port()
    workers = options.workers if workers is None else workers
    if target == "tokenstream":
        config = workdir / f"config-{reply.tokens}.yaml"
        rules = [{"match": "^bench$", "reply": reply.prompt}]
        # the stream-count and duration limits (429 beyond 1000 streams by default) are off:
        # the benchmark measures how the server copes, not where it refuses
        limits = {"max_concurrent_streams": 0, "max_stream_duration_s": 0}
        config.write_text(
            json.dumps({"server": limits, "responses": {"rules": rules}}), encoding="utf-8"
        )
        cwd, env = options.server_root, server_env(options.server_root)
        argv = [sys.executable, "-m", "tokenstream", "serve", "--port", str(port),
                "--config", str(config), "--loop", options.loop, "--clock", options.clock,
                "--log-level", "WARNING"]
        if workers > 1:
            argv += ["--workers", str(workers)]
        if upstream is not None:
            argv += ["--upstream", upstream]
    else:
        writes = workdir / f"writes-{reply.tokens}.json"
        writes.write_text(json.dumps(reply.writes), encoding="utf-8")
        cwd, env = ROOT, None
        argv = [sys.executable, str(HERE / "bench_baseline.py"), "--port", str(port),
                "--writes", str(writes), "--loop", options.loop]
        if workers > 1:
            argv += ["--workers", str(workers)]
    placement = options.placement.server if cpus is True else cpus
    process = subprocess.Popen(
        Placement.wrap(placement if isinstance(placement, str) else None, argv),
        cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    running = Server(target, port, process, workers)
    try:
        answered: set[int] = set()  # the workers that have answered /healthz
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                err = process.stderr.read().decode() if process.stderr else ""
                raise SystemExit(f"bench: the {target} server exited at start-up:\n{err}")
            with contextlib.suppress(urllib.error.URLError, ConnectionError):
                answered.add(running.health().get("worker", {}).get("pid", process.pid))
            # every worker listens: each new connection lands on one of them, by the hash
            # of its address, so N workers are all seen after a few tries
            if len(answered) >= running.workers:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: the {target} server did not start in 60 s "
                                 f"({len(answered)} of {running.workers} workers answered)")
            time.sleep(0.1 if not answered else 0.01)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()


class LoadRun:
    """Load generator processes running one job, split evenly between them."""

    def __init__(self, options: Options, job: dict[str, Any], streams: int) -> None:
        clients = max(1, min(options.clients, streams or 1))
        share = [streams // clients + (i < streams % clients) for i in range(clients)]
        start_at = time.monotonic() + 1.0  # every client starts together, after its imports
        self.start_at = start_at
        self.processes = []
        for index, count in enumerate(share):
            process = subprocess.Popen(
                Placement.wrap(options.placement.clients,
                               [sys.executable, str(HERE / "bench_load.py")]),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )
            assert process.stdin is not None
            process.stdin.write(json.dumps({**job, "streams": count, "start_at": start_at,
                                            "seed": index, "loop": options.loop}) + "\n")
            process.stdin.flush()
            self.processes.append(process)

    def wait_ready(self) -> int:
        """Memory mode: wait until every client holds its streams; the number held."""
        holding = 0
        for process in self.processes:
            assert process.stdout is not None
            holding += json.loads(process.stdout.readline())["holding"]
        return holding

    def release(self) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write("close\n")
            process.stdin.flush()

    def results(self) -> list[dict[str, Any]]:
        out = []
        for process in self.processes:
            stdout, _ = process.communicate()
            if process.returncode != 0:
                raise SystemExit(f"bench: a load generator failed (exit {process.returncode})")
            out.append(json.loads(stdout.strip().splitlines()[-1]))
        return out


# ---------------------------------------------------------------- options and results


@dataclass
class Options:
    loop: str
    clock: str
    clients: int
    placement: Placement
    targets: tuple[str, ...]
    workdir: Path
    server_root: Path = ROOT  # whose tokenstream package the servers run
    workers: int = 1  # server processes (serve --workers N; the baseline's likewise)


@dataclass
class Row:
    scenario: str
    n: str
    metric: str
    unit: str
    values: dict[str, float | None]
    better: str = "lower"  # which way is better, for reading the ratio
    target: str = ""

    def ratio(self) -> float | None:
        ours, base = self.values.get("tokenstream"), self.values.get("baseline")
        if ours is None or base is None or base == 0:
            return None
        return ours / base


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[rank]


def _utilisation(clients: list[dict[str, Any]]) -> float:
    return max(c["cpu_s"] / c["wall_s"] for c in clients if c["wall_s"] > 0) * 100


def _machine_share(cpu_s: float, wall_s: float) -> float | None:
    """CPU seconds as a share of every CPU this process may run on over ``wall_s``, %."""
    return cpu_s / (wall_s * len(os.sched_getaffinity(0))) * 100 if wall_s > 0 else None


# ---------------------------------------------------------------- scenario 1: paced fidelity


def token_arrivals(
    reply: Reply, streams: list[dict[str, Any]]
) -> tuple[list[tuple[dict[str, Any], list[float]]], dict[str, int]]:
    """The complete streams with the arrival time of each token event, and why the others
    failed (an error, or not the expected number of events), counted by reason."""
    index = reply.token_event_index
    complete = []
    errors: dict[str, int] = {}
    for stream in streams:
        times = stream["times"]
        if stream["error"] or len(times) != reply.events:
            reason = stream["error"] or f"{len(times)} of {reply.events} events"
            errors[reason] = errors.get(reason, 0) + 1
            continue
        complete.append((stream, [times[i] for i in index]))
    return complete, errors


def analyse_fidelity(reply: Reply, interval: float, streams: list[dict[str, Any]],
                     sample: int, rng: random.Random) -> dict[str, Any]:
    lateness: list[float] = []
    gaps: list[float] = []
    duration_errors: list[float] = []
    first_events: list[float] = []
    points: list[tuple[float, float, float]] = []  # (arrival, lateness, gap) for the plot
    complete, errors = token_arrivals(reply, streams)
    failed = len(streams) - len(complete)
    ideal_duration = (len(reply.token_event_index) - 1) * interval
    for stream, arrivals in complete:
        t0 = arrivals[0]
        first_events.append(t0 - stream["opened_at"])
        for i in range(1, len(arrivals)):
            late = arrivals[i] - (t0 + i * interval)
            gap = arrivals[i] - arrivals[i - 1]
            lateness.append(late)
            gaps.append(gap)
            points.append((arrivals[i], late, gap))
        if ideal_duration:
            duration_errors.append((arrivals[-1] - t0 - ideal_duration) / ideal_duration * 100)
    lateness.sort()
    first_events.sort()
    long_gaps = sum(1 for g in gaps if g > 2 * interval)
    if len(points) > sample:
        points = rng.sample(points, sample)
    start = min((p[0] for p in points), default=0.0)
    return {
        "streams_ok": len(streams) - failed,
        "streams_failed": failed,
        "failures": errors,
        "events": len(lateness),
        "lateness_ms": {
            "p50": percentile(lateness, 50) * 1e3,
            "p99": percentile(lateness, 99) * 1e3,
            "p99.9": percentile(lateness, 99.9) * 1e3,
            "max": (lateness[-1] * 1e3) if lateness else float("nan"),
        },
        # from the request's sending (the connection is open) to the first token's arrival:
        # lateness is anchored at the first event, so a stream that starts late shows here
        "first_event_ms": {
            "p50": percentile(first_events, 50) * 1e3,
            "p99": percentile(first_events, 99) * 1e3,
            "max": (first_events[-1] * 1e3) if first_events else float("nan"),
        },
        "long_gaps": long_gaps,
        "long_gap_share_pct": (long_gaps / len(gaps) * 100) if gaps else float("nan"),
        "duration_error_pct": {
            "mean": sum(duration_errors) / len(duration_errors) if duration_errors else None,
            "max_abs": max(map(abs, duration_errors)) if duration_errors else None,
        },
        "samples": [(round(t - start, 4), round(late * 1e3, 3), round(gap * 1e3, 3))
                    for t, late, gap in sorted(points)],
    }


def _server_lateness(metrics_text: str) -> dict[str, float]:
    """Bucket upper bounds of the server's own p50/p99 lateness, from /metrics."""
    buckets = []
    for line in metrics_text.splitlines():
        if line.startswith("tokenstream_pacing_lateness_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
    total = buckets[-1][1] if buckets else 0
    out = {}
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        bound = next((le for le, count in buckets if total and count >= q * total), float("nan"))
        out[name] = bound * 1e3
    return out


def fidelity(options: Options, results: Results, counts: list[int], tokens: int,
             rate: float, ramp: float) -> None:
    reply = make_reply(tokens)
    interval = 1.0 / rate
    path = stream_path(reply, rate)
    rng = random.Random(0)
    raw = results.raw.setdefault("fidelity", {"tokens": tokens, "tokens_per_second": rate,
                                              "ramp_s": ramp, "runs": []})
    for n in counts:
        per_target: dict[str, dict[str, Any]] = {}
        for target in options.targets:
            with server(target, options, reply, options.workdir) as srv:
                ramp_n = ramp if n > 1 else 0.0
                job = {"mode": "fidelity", "host": "127.0.0.1", "port": srv.port, "path": path,
                       "ramp_s": ramp_n, "timeout_s": ramp_n + tokens * interval * 3 + 60}
                cpu0 = srv.cpu_by_process()
                run = LoadRun(options, job, n)
                clients = run.results()
                cpu1 = srv.cpu_by_process()
                # by process, the server's first: how evenly the workers shared the load
                by_process = [cpu1[pid] - cpu0.get(pid, 0.0)
                              for pid in sorted(cpu1, key=lambda pid: (pid != srv.pid, pid))]
                cpu = sum(by_process)
                streams = [s for c in clients for s in c["streams"]]
                summary = analyse_fidelity(reply, interval, streams, 4000, rng)
                wall = max(c["wall_s"] for c in clients)
                summary["server_cpu_pct"] = cpu / wall * 100
                delivered = sum(s["events"] for s in streams)
                summary["server_cpu_ms_per_1000_events"] = (
                    cpu / delivered * 1e6 if delivered else None)
                summary["client_cpu_pct"] = _utilisation(clients)
                summary["server_processes"] = len(by_process)
                summary["server_cpu_s_by_process"] = by_process
                summary["server_cpu_share_pct"] = _machine_share(cpu, wall)
                summary["client_cpu_share_pct"] = _machine_share(
                    sum(c["cpu_s"] for c in clients), wall)
                if target == "tokenstream":
                    summary["server_lateness_ms"] = _server_lateness(
                        srv.get("/metrics").decode())
                per_target[target] = summary
                print(f"  fidelity N={n} {target}: p50 {summary['lateness_ms']['p50']:.2f} ms,"
                      f" p99 {summary['lateness_ms']['p99']:.2f} ms,"
                      f" first event p99 {summary['first_event_ms']['p99']:.2f} ms,"
                      f" failed {summary['streams_failed']},"
                      f" server CPU {summary['server_cpu_pct']:.0f}%"
                      f" ({summary['server_cpu_ms_per_1000_events'] or 0:.1f} ms/1000 events),"
                      f" client CPU {summary['client_cpu_pct']:.0f}%"
                      f" (shares of all CPUs: server {summary['server_cpu_share_pct']:.0f}%,"
                      f" load generator {summary['client_cpu_share_pct']:.0f}%)"
                      + (" CPU s by server process "
                         + "/".join(f"{s:.2f}" for s in by_process)
                         if len(by_process) > 1 else ""), file=sys.stderr)
        raw["runs"].append({"streams": n, **per_target})

        def values(get: Any, per: dict[str, dict[str, Any]] = per_target) -> dict[str, Any]:
            return {t: get(s) for t, s in per.items()}

        label = f"{n}"
        for q, target_text in (("p50", "<= 1 ms at 1000"), ("p99", "<= 5 ms at 1000"),
                               ("p99.9", ""), ("max", "")):
            results.rows.append(Row("fidelity", label, f"lateness {q}", "ms",
                                    values(lambda s, q=q: s["lateness_ms"][q]),
                                    target=target_text))
        for q in ("p50", "p99", "max"):
            results.rows.append(Row("fidelity", label, f"time to first event {q}", "ms",
                                    values(lambda s, q=q: s["first_event_ms"][q])))
        results.rows.append(Row("fidelity", label, "gaps > 2x interval", "%",
                                values(lambda s: s["long_gap_share_pct"]), target="0 at 1000"))
        results.rows.append(Row("fidelity", label, "duration error (mean)", "%",
                                values(lambda s: s["duration_error_pct"]["mean"]),
                                target="<= 0.5 at 1000"))
        results.rows.append(Row("fidelity", label, "streams failed", "",
                                values(lambda s: s["streams_failed"])))
        results.rows.append(Row("fidelity", label, "server CPU", "%",
                                values(lambda s: s["server_cpu_pct"])))
        results.rows.append(Row("fidelity", label, "server CPU per 1000 events", "ms",
                                values(lambda s: s["server_cpu_ms_per_1000_events"])))
        results.rows.append(Row("fidelity", label, "load generator CPU", "%",
                                values(lambda s: s["client_cpu_pct"])))
        results.rows.append(Row("fidelity", label, "server share of all CPUs", "%",
                                values(lambda s: s["server_cpu_share_pct"])))
        results.rows.append(Row("fidelity", label, "load generator share of all CPUs", "%",
                                values(lambda s: s["client_cpu_share_pct"])))
    largest = {}
    for target in options.targets:
        held = [run["streams"] for run in raw["runs"]
                if target in run and run[target]["streams_failed"] == 0
                and run[target]["lateness_ms"]["p99"] <= 5.0]
        largest[target] = max(held) if held else None
    results.rows.append(Row("fidelity", "-", "largest N with p99 <= 5 ms", "streams", largest,
                            better="higher", target="aim 5000"))


# ---------------------------------------------------------------- scenario 2: unpaced throughput


def throughput(options: Options, results: Results, streams: int, tokens: int,
               duration: float) -> None:
    reply = make_reply(tokens)
    path = stream_path(reply, 0)
    per_target: dict[str, dict[str, Any]] = {}
    for target in options.targets:
        with server(target, options, reply, options.workdir) as srv:
            job = {"mode": "throughput", "host": "127.0.0.1", "port": srv.port, "path": path,
                   "duration_s": duration}
            run = LoadRun(options, job, streams)
            time.sleep(max(0.0, run.start_at - time.monotonic()))  # the clients' start
            cpu0 = srv.cpu_seconds()
            clients = run.results()
            cpu = srv.cpu_seconds() - cpu0
            events = sum(c["events"] for c in clients)
            wall = max(c["wall_s"] for c in clients)
            summary = {
                "events": events,
                "streams_completed": sum(c["streams"] for c in clients),
                "errors": sum(c["errors"] for c in clients),
                "events_per_s": events / wall,
                "mib_per_s": sum(c["bytes"] for c in clients) / wall / 2**20,
                "server_cpu_s_per_1000_events": cpu / events * 1000 if events else None,
                # what a stream costs beside its events: with --tokens 1, about a request's cost
                "server_cpu_ms_per_stream": (
                    cpu / completed * 1000 if (completed := sum(c["streams"] for c in clients))
                    else None
                ),
                "server_cpu_pct": cpu / wall * 100,
                "client_cpu_pct": _utilisation(clients),
                "server_cpu_share_pct": _machine_share(cpu, wall),
                "client_cpu_share_pct": _machine_share(sum(c["cpu_s"] for c in clients), wall),
            }
            per_target[target] = summary
            print(f"  throughput {target}: {summary['events_per_s']:.0f} events/s,"
                  f" server CPU {summary['server_cpu_pct']:.0f}%,"
                  f" client CPU {summary['client_cpu_pct']:.0f}%", file=sys.stderr)
    results.raw["throughput"] = {"streams": streams, "tokens": tokens, "duration_s": duration,
                                 **per_target}
    label = f"{streams}"

    def values(get: Any) -> dict[str, Any]:
        return {t: get(s) for t, s in per_target.items()}

    results.rows.append(Row("throughput", label, "events/s", "1/s",
                            values(lambda s: s["events_per_s"]), better="higher",
                            target=">= 0.8x baseline"))
    results.rows.append(Row("throughput", label, "server CPU s / 1000 events", "s",
                            values(lambda s: s["server_cpu_s_per_1000_events"])))
    results.rows.append(Row("throughput", label, "streams completed", "",
                            values(lambda s: s["streams_completed"]), better="higher"))
    results.rows.append(Row("throughput", label, "server CPU per stream", "ms",
                            values(lambda s: s["server_cpu_ms_per_stream"])))
    results.rows.append(Row("throughput", label, "server CPU", "%",
                            values(lambda s: s["server_cpu_pct"])))
    results.rows.append(Row("throughput", label, "load generator CPU", "%",
                            values(lambda s: s["client_cpu_pct"])))
    results.rows.append(Row("throughput", label, "load generator share of all CPUs", "%",
                            values(lambda s: s["client_cpu_share_pct"])))


# ---------------------------------------------------------------- scenario 3: memory


def memory(options: Options, results: Results, counts: list[int], ramp: float) -> None:
    reply = make_reply(20)
    slow = 0.05  # one token per 20 s: the streams stay open and idle
    path = stream_path(reply, slow)
    warm = stream_path(reply, 0)
    raw = results.raw.setdefault("memory", {"tokens_per_second": slow, "runs": []})
    for n in counts:
        per_target: dict[str, dict[str, Any]] = {}
        for target in options.targets:
            with server(target, options, reply, options.workdir) as srv:
                for _ in range(3):  # first requests load lazily imported code paths
                    srv.get(warm)
                rss0 = srv.rss_kib()
                holding = 0
                rss = rss0
                if n:
                    job = {"mode": "memory", "host": "127.0.0.1", "port": srv.port,
                           "path": path, "ramp_s": ramp, "timeout_s": ramp + 120}
                    run = LoadRun(options, job, n)
                    holding = run.wait_ready()
                    time.sleep(0.5)
                    rss = srv.rss_kib()
                    run.release()
                    run.results()
                per_target[target] = {
                    "rss_idle_kib": rss0, "rss_kib": rss, "holding": holding,
                    "kib_per_stream": (rss - rss0) / holding if holding else None,
                }
                print(f"  memory N={n} {target}: RSS {rss0} -> {rss} KiB, holding {holding}",
                      file=sys.stderr)
        raw["runs"].append({"streams": n, **per_target})
        label = f"{n}"
        results.rows.append(Row("memory", label, "server RSS", "MiB",
                                {t: s["rss_kib"] / 1024 for t, s in per_target.items()}))
        if n:
            results.rows.append(Row("memory", label, "KiB per open stream", "KiB",
                                    {t: s["kib_per_stream"] for t, s in per_target.items()},
                                    target="<= 16 at 10000"))
            results.rows.append(Row("memory", label, "streams held open", "",
                                    {t: s["holding"] for t, s in per_target.items()},
                                    better="higher"))


# ---------------------------------------------------------------- scenario 4: proxy overhead


def proxy(options: Options, results: Results, requests: int) -> None:
    """Delegates to scripts/proxy_overhead.py (one request at a time, in its own processes).

    Its baseline is the same request sent straight to the fake upstream; a bare aiohttp
    relay is measured too. ``proxy_streams`` measures many streams at once.
    """
    script = HERE / "proxy_overhead.py"
    try:
        import tokenstream.sources.upstream  # noqa: F401
    except ImportError:
        script = HERE / "missing"
    if not script.exists():
        message = ("skipped: the upstream proxy (tokenstream.sources.upstream, "
                   "scripts/proxy_overhead.py) is not on this branch")
        results.skipped["proxy"] = message
        print(f"  proxy: {message}", file=sys.stderr)
        return
    out = options.workdir / "proxy.json"
    run = subprocess.run(
        [sys.executable, str(script), "--requests", str(requests),
         "--warmup", str(min(5, requests)), "--disconnects", str(min(20, requests)),
         "--loop", options.loop, "--json", str(out), "--server-root", str(options.server_root)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    if run.returncode != 0:
        raise SystemExit(f"bench: scripts/proxy_overhead.py failed:\n{run.stderr}")
    measured = json.loads(out.read_text(encoding="utf-8"))["results"]
    results.raw["proxy"] = measured
    for mode in ("burst", "per-token"):
        if mode not in measured:
            continue
        paths = measured[mode]
        results.rows.append(Row("proxy", "1", f"TTFT p50, upstream {mode} (baseline: direct)",
                                "ms", {"tokenstream": paths["proxy"]["p50_ms"],
                                       "baseline": paths["direct"]["p50_ms"]}))
        results.rows.append(Row("proxy", "1",
                                f"added TTFT p50, upstream {mode} (baseline: bare relay)", "ms",
                                {"tokenstream": paths["added_p50_ms"],
                                 "baseline": paths["relay_added_p50_ms"]},
                                target="<= 1 ms" if mode == "burst" else ""))
        print(f"  proxy {mode}: added TTFT p50 {paths['added_p50_ms']:.2f} ms "
              f"(bare relay {paths['relay_added_p50_ms']:.2f} ms)", file=sys.stderr)


def analyse_proxy(reply: Reply, streams: list[dict[str, Any]]) -> dict[str, Any]:
    """Time to first token (from sending the request) and the gaps between content events."""
    ttfts: list[float] = []
    gaps: list[float] = []
    complete, errors = token_arrivals(reply, streams)
    failed = len(streams) - len(complete)
    for stream, arrivals in complete:
        ttfts.append(arrivals[0] - stream["opened_at"])
        gaps.extend(b - a for a, b in itertools.pairwise(arrivals))
    ttfts.sort()
    gaps.sort()
    return {
        "streams_ok": len(streams) - failed,
        "streams_failed": failed,
        "failures": errors,
        "ttft_ms": {q: percentile(ttfts, float(q[1:])) * 1e3 for q in ("p50", "p99")},
        "gap_ms": {q: percentile(gaps, float(q[1:])) * 1e3 for q in ("p50", "p99")}
        | {"max": gaps[-1] * 1e3 if gaps else float("nan")},
    }


def proxy_streams(options: Options, results: Results, counts: list[int], tokens: int,
                  ramp: float) -> None:
    """Proxy overhead at N concurrent streams, through tokenstream versus direct.

    The upstream is the baseline server (one token per chunk at 50 tokens/s, the same bytes
    as in the fidelity scenario) on the load generators' CPUs, as a model would be on
    another machine. Direct: the load generator reads it straight. Through tokenstream:
    ``GET /v1/stream?source=upstream&tokens_per_second=0``, so tokenstream passes each
    piece on as soon as it is settled (no re-pacing): what is measured is the proxy's cost.
    tokenstream settles a token when the next chunk shows where it ends, so its first token
    is one upstream interval (20 ms) later by design; the figures say how much more.
    """
    rate = 50.0  # the baseline upstream's default pace for POST /v1/chat/completions
    reply = make_reply(tokens)
    direct_path = stream_path(reply, rate)
    proxied_path = "/v1/stream?" + urlencode({
        "prompt": "bench", "format": "openai", "source": "upstream", "tokens_per_second": "0",
        "model": "bench-upstream",
    })
    raw = results.raw.setdefault("proxy_streams", {"tokens": tokens, "upstream_rate": rate,
                                                   "runs": []})
    for n in counts:
        measured: dict[str, dict[str, Any]] = {}
        with server("baseline", options, reply, options.workdir,
                    cpus=options.placement.clients, workers=1) as upstream:
            runs = [("baseline", upstream.port, direct_path)]
            base_url = f"http://127.0.0.1:{upstream.port}/v1"
            with server("tokenstream", options, reply, options.workdir,
                        upstream=base_url) as proxied:
                runs.append(("tokenstream", proxied.port, proxied_path))
                upstream.get(direct_path)  # warm-up: lazily imported code, the upstream pool
                proxied.get(proxied_path)
                for target, port, path in runs:
                    job = {"mode": "fidelity", "host": "127.0.0.1", "port": port,
                           "path": path, "ramp_s": ramp if n > 1 else 0.0,
                           "timeout_s": ramp + tokens / rate + 60}
                    run = LoadRun(options, job, n)
                    time.sleep(max(0.0, run.start_at - time.monotonic()))  # the clients' start
                    cpu0 = proxied.cpu_seconds()
                    clients = run.results()
                    cpu = proxied.cpu_seconds() - cpu0
                    streams = [s for c in clients for s in c["streams"]]
                    measured[target] = analyse_proxy(reply, streams)
                    summary = measured[target]
                    wall = max(c["wall_s"] for c in clients)
                    # tokenstream's CPU also in the direct run: it is idle then (a check)
                    summary["tokenstream_cpu_pct"] = cpu / wall * 100 if wall else None
                    how = "through tokenstream" if target == "tokenstream" else "direct"
                    print(f"  proxy N={n} {how}: TTFT p50 {summary['ttft_ms']['p50']:.2f} ms, "
                          f"gap p99 {summary['gap_ms']['p99']:.2f} ms, "
                          f"failed {summary['streams_failed']}, "
                          f"tokenstream CPU {summary['tokenstream_cpu_pct']:.0f}%",
                          file=sys.stderr)
        raw["runs"].append({"streams": n, **measured})
        label = str(n)
        ours, direct = measured["tokenstream"], measured["baseline"]
        interval_ms = 1000 / rate
        for q in ("p50", "p99"):
            results.rows.append(Row("proxy", label, f"TTFT {q} (baseline: direct)", "ms",
                                    {"tokenstream": ours["ttft_ms"][q],
                                     "baseline": direct["ttft_ms"][q]}))
        added = ours["ttft_ms"]["p50"] - direct["ttft_ms"]["p50"]
        results.rows.append(Row("proxy", label, "added TTFT p50 beyond one upstream interval",
                                "ms", {"tokenstream": added - interval_ms}))
        for q in ("p50", "p99", "max"):
            results.rows.append(Row("proxy", label, f"gap between tokens {q} (baseline: direct)",
                                    "ms", {"tokenstream": ours["gap_ms"][q],
                                           "baseline": direct["gap_ms"][q]}))
        results.rows.append(Row("proxy", label, "streams failed", "",
                                {"tokenstream": ours["streams_failed"],
                                 "baseline": direct["streams_failed"]}))
        results.rows.append(Row("proxy", label, "tokenstream server CPU (proxying)", "%",
                                {"tokenstream": ours["tokenstream_cpu_pct"]}))


# ---------------------------------------------------------------- output


def _fmt(value: float | None) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"


def table(results: Results) -> str:
    header = ("scenario", "N", "metric", "unit", "tokenstream", "baseline", "ratio", "target")
    lines = [header]
    for row in results.rows:
        ratio = row.ratio()
        lines.append((row.scenario, row.n, row.metric, row.unit,
                      _fmt(row.values.get("tokenstream")), _fmt(row.values.get("baseline")),
                      "-" if ratio is None else f"{ratio:.2f}x", row.target))
    for name, message in results.skipped.items():
        lines.append((name, "-", message, "", "", "", "", ""))
    widths = [max(len(line[i]) for line in lines if line[0] not in results.skipped or i != 2)
              for i in range(len(header))]
    out = []
    for index, line in enumerate(lines):
        if line[0] in results.skipped:
            out.append(f"| {line[0]:<{widths[0]}} | {line[2]}")
            continue
        cells = [cell.rjust(w) if 4 <= i <= 6 else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(line, widths, strict=True))]
        out.append("| " + " | ".join(cells) + " |")
        if index == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def commit_of(root: Path) -> str | None:
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    return commit or None


def machine() -> dict[str, Any]:
    model = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as file:
        for line in file:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("aiohttp", "uvloop", "prometheus_client"):
        try:
            from importlib.metadata import version

            versions[package] = version(package)
        except Exception:
            versions[package] = None
    commit = commit_of(ROOT)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
        "packages": versions,
        "commit": commit,
    }


def plot(results: Results, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print("bench: --plot needs matplotlib: pip install -e '.[bench]'", file=sys.stderr)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    styles = {"tokenstream": "-", "baseline": "--"}
    fid = results.raw.get("fidelity", {}).get("runs", [])
    ax = axes[0][0]
    colours = plt.get_cmap("viridis")
    for index, run in enumerate(fid):
        colour = colours(index / max(1, len(fid) - 1))  # one colour per N, style per target
        for target in TARGETS:
            if target not in run or not run[target]["samples"]:
                continue
            late = sorted(s[1] for s in run[target]["samples"])
            share = [100 * (i + 1) / len(late) for i in range(len(late))]
            ax.plot(late, share, styles[target], color=colour,
                    label=f"{target} N={run['streams']}")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("lateness at the client, ms (linear within +-0.1 ms, log beyond)")
    ax.set_ylabel("% of events at or below")
    ax.set_title("Paced fidelity: lateness distribution (sampled events)")
    ax.axvline(5, color="grey", lw=0.8)
    ax.legend(fontsize=7)
    ax = axes[0][1]
    if fid:
        run = next((r for r in fid if r["streams"] == 1000), fid[-1])
        interval_ms = 1000 / results.raw["fidelity"]["tokens_per_second"]
        for target, colour in (("baseline", "tab:orange"), ("tokenstream", "tab:blue")):
            if target in run:
                samples = run[target]["samples"]
                ax.scatter([s[0] for s in samples], [s[2] for s in samples], s=2,
                           alpha=0.4, color=colour, label=target)
        ax.axhline(2 * interval_ms, color="red", lw=0.8, label="2x interval")
        ax.set_xlabel("time since the first sampled event, s")
        ax.set_ylabel("gap between events, ms")
        ax.set_title(f"Gaps over time at N={run['streams']} (sampled)")
        ax.legend(fontsize=7)
    ax = axes[1][0]
    tp = results.raw.get("throughput")
    if tp:
        names = [t for t in TARGETS if t in tp]
        ax.bar(names, [tp[t]["events_per_s"] for t in names], color=["tab:blue", "tab:orange"])
        ax.set_ylabel("events/s")
        ax.set_title(f"Unpaced throughput, {tp['streams']} concurrent streams")
    ax = axes[1][1]
    mem = [r for r in results.raw.get("memory", {}).get("runs", []) if r["streams"]]
    for target in TARGETS:
        points = [(r["streams"], r[target]["kib_per_stream"]) for r in mem if target in r]
        if points:
            ax.plot(*zip(*points, strict=True), styles[target], marker="o", label=target)
    if mem:
        ax.axhline(16, color="grey", lw=0.8, label="target 16 KiB")
        ax.set_xlabel("open idle streams")
        ax.set_ylabel("KiB per stream (server RSS)")
        ax.set_title("Memory per open stream")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"bench: wrote {path}", file=sys.stderr)


# ---------------------------------------------------------------- command line


def _counts(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--loop", choices=["asyncio", "uvloop", "auto"], default="auto",
                        help="event loop of servers and load generators (auto: uvloop if "
                        "installed)")
    common.add_argument("--clock", choices=["bucket", "loop"], default="bucket",
                        help="tokenstream's pacing timers (serve --clock)")
    common.add_argument("--clients", type=int, default=1, help="load generator processes")
    common.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    common.add_argument("--workers", type=int, default=1, metavar="N",
                        help="server processes: tokenstream serve --workers N, and N baseline "
                        "processes on one port (default 1); with no CPU left over for the load "
                        "generators, nothing is pinned")
    common.add_argument("--only", choices=TARGETS, help="run one target, no baseline")
    common.add_argument("--out", default="bench-out", help="directory for results.json")
    common.add_argument("--server-root", type=Path, default=ROOT, metavar="DIR",
                        help="serve the tokenstream package of this checkout (default: this "
                        "one; the harness and the baseline are always this one's)")
    common.add_argument("--plot", action="store_true", help="also write OUT/bench.png")
    commands = parser.add_subparsers(dest="scenario", required=True)

    fid = commands.add_parser("fidelity", parents=[common], help="paced fidelity")
    fid.add_argument("--streams", type=_counts, default=[1, 100, 500, 1000, 2000, 5000])
    fid.add_argument("--tokens", type=int, default=200)
    fid.add_argument("--rate", type=float, default=50.0, help="tokens per second")
    fid.add_argument("--ramp", type=float, default=1.0, metavar="SECONDS",
                     help="seconds over which streams start, at random (default 1); 0: all "
                     "opened back to back, a burst of arrivals")
    tp = commands.add_parser("throughput", parents=[common], help="unpaced throughput")
    tp.add_argument("--streams", type=int, default=100, help="concurrent streams")
    tp.add_argument("--tokens", type=int, default=500)
    tp.add_argument("--duration", type=float, default=5.0)
    mem = commands.add_parser("memory", parents=[common], help="RSS per open stream")
    mem.add_argument("--streams", type=_counts, default=[0, 1000, 5000, 10000])
    mem.add_argument("--ramp", type=float, default=2.0)
    px = commands.add_parser("proxy", parents=[common],
                             help="proxy overhead (runs scripts/proxy_overhead.py)")
    px.add_argument("--requests", type=int, default=100,
                    help="requests one at a time, per path (scripts/proxy_overhead.py; 0: skip)")
    px.add_argument("--streams", type=_counts, default=[1, 500],
                    help="concurrent streams through the proxy (0: skip)")
    px.add_argument("--tokens", type=int, default=100)
    px.add_argument("--ramp", type=float, default=1.0)
    every = commands.add_parser("all", parents=[common], help="every scenario, defaults")
    every.add_argument("--quick", action="store_true",
                       help="a smoke run: a few streams, about a second each")
    return parser


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the children


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--replot"] and len(argv) == 3:  # --replot RESULTS.json OUT.png
        replot(Path(argv[1]), Path(argv[2]))
        return 0
    args = build_parser().parse_args(argv)
    loop = args.loop
    if loop == "auto":
        try:
            import uvloop  # noqa: F401

            loop = "uvloop"
        except ImportError:
            loop = "asyncio"
    _raise_fd_limit()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tokenstream-bench-") as workdir:
        if args.workers < 1:
            raise SystemExit("bench: --workers must be at least 1")
        options = Options(loop=loop, clock=args.clock, clients=args.clients,
                          placement=Placement.choose(not args.no_pin, args.workers),
                          targets=(args.only,) if args.only else TARGETS,
                          workdir=Path(workdir), server_root=args.server_root.resolve(),
                          workers=args.workers)
        results = Results()
        started = time.time()
        info = machine()
        print(f"bench: {info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}, "
              f"loop {loop}, load average {info['load_average']}, {args.workers} server "
              f"process{'es' if args.workers > 1 else ''} on CPU "
              f"{options.placement.server or 'any'}, clients on CPU "
              f"{options.placement.clients or 'any'}"
              + (" (the load generators share the CPUs with the server)"
                 if options.placement.shared else ""), file=sys.stderr)
        scenario = args.scenario
        if scenario == "fidelity":
            fidelity(options, results, args.streams, args.tokens, args.rate, args.ramp)
        elif scenario == "throughput":
            throughput(options, results, args.streams, args.tokens, args.duration)
        elif scenario == "memory":
            memory(options, results, args.streams, args.ramp)
        elif scenario == "proxy":
            if args.requests:
                proxy(options, results, args.requests)
            proxy_streams(options, results, [n for n in args.streams if n], args.tokens,
                          args.ramp)
        elif args.quick:
            fidelity(options, results, [3], tokens=20, rate=50.0, ramp=0.2)
            throughput(options, results, 3, tokens=50, duration=0.5)
            memory(options, results, [10], ramp=0.2)
            proxy(options, results, requests=3)
            proxy_streams(options, results, [3], tokens=10, ramp=0.2)
        else:
            fidelity(options, results, [1, 100, 500, 1000, 2000, 5000], 200, 50.0, 1.0)
            throughput(options, results, 100, 500, 5.0)
            memory(options, results, [0, 1000, 5000, 10000], 2.0)
            proxy(options, results, requests=100)
            proxy_streams(options, results, [1, 500], 100, 1.0)
    info["load_average_after"] = os.getloadavg()
    document = {
        "command": " ".join(["python", "scripts/bench.py", *argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "machine": info,
        "options": {"loop": loop, "clock": args.clock, "clients": args.clients,
                    "workers": args.workers,
                    "server_cpu": options.placement.server,
                    "client_cpus": options.placement.clients,
                    "clients_share_server_cpus": options.placement.shared,
                    "server_root": str(options.server_root),
                    "server_commit": commit_of(options.server_root)},
        "rows": [{**row.__dict__, "ratio": row.ratio()} for row in results.rows],
        "skipped": results.skipped,
        "raw": results.raw,
    }
    (out / "results.json").write_text(json.dumps(document, separators=(",", ":")) + "\n",
                                      encoding="utf-8")
    print(table(results))
    print(f"bench: raw results in {out / 'results.json'}", file=sys.stderr)
    if args.plot:
        plot(results, out / "bench.png")
    return 0


def replot(results_json: Path, png: Path) -> None:
    """Draw the PNG again from a saved results.json (``python scripts/bench.py --replot``)."""
    results = Results(raw=json.loads(results_json.read_text(encoding="utf-8"))["raw"])
    plot(results, png)


if __name__ == "__main__":
    sys.exit(main())
