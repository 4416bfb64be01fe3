#!/usr/bin/env python3
"""Compare two commits of tokenstream in one run: the old one against the new.

Each revision is checked out with ``git worktree add --detach`` into a temporary directory
(removed afterwards) and served from there (``bench.py --server-root``); the harness,
scripts/bench.py and its load generator, is always this checkout's. The two run in turns,
old and new, then new and old, and so on (ABBA), so that the machine's drift and noise fall
on both alike. Each turn is ``bench.py fidelity --streams 100,1000`` and
``bench.py throughput`` with ``--only tokenstream`` (the other revision is the baseline),
with ``--workers N`` each revision serving with ``serve --workers N``, with ``--proxy N``
also N requests one at a time through the proxy (scripts/proxy_overhead.py, burst
upstream), and with ``--per-stream`` one-token streams back to back
(``bench.py throughput --streams 10 --tokens 1``: a stream's start and end).

    python scripts/bench_compare.py --old de44b28 --new HEAD [--rounds 4] [--ramp 0] [--workers N]
                                   [--out DIR]

The table gives, per metric, the median over the rounds for each revision, their range, and
new/old. The acceptance rule of the renovation: new no more than 10 % worse than old on p99
lateness, events/s and server CPU per event (the last column). Everything per round is in
OUT/compare.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402  (this directory's harness)

TOLERANCE = 0.10  # new may be this much worse than old on the acceptance metrics


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    get: Callable[[dict[str, Any]], float | None]  # from one turn's figures
    better: str = "lower"
    acceptance: bool = False

    def verdict(self, ratio: float | None) -> str:
        if not self.acceptance or ratio is None:
            return ""
        worse = ratio > 1 + TOLERANCE if self.better == "lower" else ratio < 1 - TOLERANCE
        return "WORSE > 10 %" if worse else "ok"


def metrics(streams: list[int], proxy: bool, per_stream: bool) -> list[Metric]:
    out = []
    for n in map(str, streams):
        out += [
            Metric(f"lateness p50, {n} streams", "ms", _at("fidelity", n, "lateness_ms", "p50")),
            Metric(f"lateness p99, {n} streams", "ms", _at("fidelity", n, "lateness_ms", "p99"),
                   acceptance=True),
            # ms per 1000 events is us per event
            Metric(f"server CPU per event, {n} streams", "us",
                   _at("fidelity", n, "server_cpu_ms_per_1000_events"), acceptance=True),
            Metric(f"streams failed, {n} streams", "", _at("fidelity", n, "streams_failed")),
        ]
    out += [
        Metric("throughput events/s", "1/s", lambda s: s["throughput"]["events_per_s"],
               better="higher", acceptance=True),
        Metric("throughput server CPU per event", "us",
               lambda s: _scaled(s["throughput"]["server_cpu_s_per_1000_events"], 1000),
               acceptance=True),
    ]
    if per_stream:
        out.append(Metric("server CPU per one-token stream", "ms",
                          _at("per_stream", "server_cpu_ms_per_stream")))
    if proxy:
        out += [
            Metric("proxy TTFT p50 (1 stream, burst)", "ms",
                   lambda s: s["proxy"]["burst"]["proxy"]["p50_ms"]),
            Metric("proxy added TTFT p50 (beyond direct)", "ms",
                   lambda s: s["proxy"]["burst"]["added_p50_ms"]),
            Metric("bare relay added TTFT p50 (control)", "ms",
                   lambda s: s["proxy"]["burst"]["relay_added_p50_ms"]),
        ]
    return out


def _at(*keys: str) -> Callable[[dict[str, Any]], float | None]:
    def get(figures: dict[str, Any]) -> float | None:
        value: Any = figures
        for key in keys:
            value = value[key]
        return None if value is None else float(value)

    return get


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


@contextlib.contextmanager
def checkout(rev: str, where: Path) -> Iterator[Path]:
    """``rev``'s tree in ``where`` (a detached worktree), removed on the way out."""
    git("worktree", "add", "--detach", "--quiet", str(where), rev)
    try:
        yield where
    finally:
        git("worktree", "remove", "--force", str(where))


def imported_from(root: Path) -> Path:
    """Where a server started with ``root`` as its server root imports tokenstream from."""
    found = subprocess.run(
        [sys.executable, "-c", "import tokenstream; print(tokenstream.__file__)"],
        cwd=root, env=bench.server_env(root), check=True, capture_output=True, text=True,
    ).stdout.strip()
    return Path(found).resolve().parent.parent


def turn(root: Path, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One revision's figures: fidelity at each N, throughput, and the proxy if asked."""
    common = ["--only", "tokenstream", "--server-root", str(root), "--loop", args.loop,
              "--workers", str(args.workers)]
    runs = [
        ("fidelity", ["fidelity", "--streams", ",".join(map(str, args.streams)),
                      "--ramp", f"{args.ramp:g}"]),
        ("throughput", ["throughput", "--duration", str(args.duration)]),
    ]
    if args.per_stream:
        runs.append(("per_stream", ["throughput", "--streams", "10", "--tokens", "1",
                                    "--duration", str(args.duration)]))
    began = time.monotonic()
    figures: dict[str, Any] = {"load_average": os.getloadavg()[0]}
    for name, scenario in runs:
        where = out / name
        subprocess.run([sys.executable, str(HERE / "bench.py"), *scenario, *common,
                        "--out", str(where)], check=True, stdout=subprocess.DEVNULL)
        raw = json.loads((where / "results.json").read_text(encoding="utf-8"))["raw"]
        if name == "fidelity":
            figures[name] = {str(run["streams"]): {k: v for k, v in run["tokenstream"].items()
                                                   if k != "samples"}
                             for run in raw["fidelity"]["runs"]}
        else:
            figures[name] = raw["throughput"]["tokenstream"]
    if args.proxy:
        where = out / "proxy.json"
        subprocess.run([sys.executable, str(HERE / "proxy_overhead.py"), "--modes", "burst",
                        "--requests", str(args.proxy), "--disconnects", "0", "--loop", args.loop,
                        "--server-root", str(root), "--json", str(where)],
                       check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        figures["proxy"] = json.loads(where.read_text(encoding="utf-8"))["results"]
    figures["seconds"] = round(time.monotonic() - began, 1)
    return figures


def _fmt(value: float | None, unit: str) -> str:
    if value is None or value != value:
        return "-"
    if not unit:  # a count
        return f"{value:g}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def summarise(rows: list[Metric], turns: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    summary = []
    for metric in rows:
        entry: dict[str, Any] = {"metric": metric.name, "unit": metric.unit,
                                 "better": metric.better}
        for side in ("old", "new"):
            values = [v for t in turns[side] if (v := metric.get(t)) is not None]
            entry[side] = {"median": statistics.median(values) if values else None,
                           "min": min(values, default=None), "max": max(values, default=None),
                           "rounds": values}
        old, new = entry["old"]["median"], entry["new"]["median"]
        entry["ratio"] = new / old if old and new is not None else None
        entry["verdict"] = metric.verdict(entry["ratio"])
        summary.append(entry)
    return summary


def table(summary: list[dict[str, Any]]) -> str:
    header = ("metric", "unit", "old (median)", "old range", "new (median)", "new range",
              "new/old", "10 % rule")
    lines = [header]
    for e in summary:
        unit = e["unit"]
        lines.append((e["metric"], unit, _fmt(e["old"]["median"], unit),
                      f"{_fmt(e['old']['min'], unit)}-{_fmt(e['old']['max'], unit)}",
                      _fmt(e["new"]["median"], unit),
                      f"{_fmt(e['new']['min'], unit)}-{_fmt(e['new']['max'], unit)}",
                      "-" if e["ratio"] is None else f"{e['ratio']:.2f}x", e["verdict"]))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for index, line in enumerate(lines):
        cells = [c.ljust(w) if i in (0, 1, 7) else c.rjust(w)
                 for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        out.append("| " + " | ".join(cells) + " |")
        if index == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="the revision to compare against")
    parser.add_argument("--new", default="HEAD", help="the revision measured (default HEAD)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="turns of each revision, alternated (default 4)")
    parser.add_argument("--streams", type=bench._counts, default=[100, 1000],
                        help="fidelity stream counts (default 100,1000)")
    parser.add_argument("--ramp", type=float, default=1.0, metavar="SECONDS",
                        help="fidelity arrivals spread over SECONDS (default 1; 0: back to "
                        "back)")
    parser.add_argument("--duration", type=float, default=5.0,
                        help="throughput seconds per turn (default 5)")
    parser.add_argument("--proxy", type=int, default=0, metavar="N",
                        help="also N proxied requests one at a time per turn (default 0: no)")
    parser.add_argument("--per-stream", action="store_true",
                        help="also one-token streams back to back: server CPU per stream")
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "auto"], default="auto")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="serve each revision with serve --workers N (bench.py --workers; "
                        "default 1, one process)")
    parser.add_argument("--out", default="bench-compare", help="directory for compare.json")
    args = parser.parse_args()
    if args.loop == "auto":  # as bench.py resolves it; proxy_overhead.py wants a name
        try:
            import uvloop  # noqa: F401

            args.loop = "uvloop"
        except ImportError:
            args.loop = "asyncio"
    revs = {side: git("rev-parse", "--verify", "--short", f"{rev}^{{commit}}")
            for side, rev in (("old", args.old), ("new", args.new))}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    info = bench.machine()
    rows = metrics(args.streams, bool(args.proxy), args.per_stream)
    turns: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    roots: dict[str, str] = {}  # where each revision was checked out, for the record
    with (
        tempfile.TemporaryDirectory(prefix="tokenstream-compare-") as tmp,
        checkout(revs["old"], Path(tmp) / "old") as old_root,
        checkout(revs["new"], Path(tmp) / "new") as new_root,
    ):
        checkouts = {"old": old_root, "new": new_root}
        for side, root in checkouts.items():
            if imported_from(root) != root.resolve():
                raise SystemExit(f"bench_compare: a server rooted at {root} would not import "
                                 "its own tokenstream package")
            roots[side] = str(root.resolve())
        for index in range(args.rounds):
            order = ("old", "new") if index % 2 == 0 else ("new", "old")
            for side in order:
                print(f"bench_compare: round {index + 1}/{args.rounds}, {side} "
                      f"({revs[side]})", file=sys.stderr)
                turns[side].append(turn(checkouts[side], args, Path(tmp) / f"{side}-{index}"))
    summary = summarise(rows, turns)
    document = {
        "command": " ".join(["python", "scripts/bench_compare.py", *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "machine": {**info, "load_average_after": os.getloadavg()},
        "revisions": revs,
        "roots": roots,
        "summary": summary,
        "turns": turns,
    }
    (out / "compare.json").write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(f"old {revs['old']}, new {revs['new']}: {args.rounds} rounds alternated (ABBA), "
          f"medians; took {document['seconds']:.0f} s, load average "
          f"{info['load_average'][0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(table(summary))
    print(f"bench_compare: every round in {out / 'compare.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
