"""estkit benchmark: enrollments/s, latency, server CPU per enrollment, memory, large stores.

    .venv/bin/python -m bench.run [--parts matrix memory bigstore floor instructions | all]
    .venv/bin/python -m bench.run --parts compare --baseline REVISION

matrix (the default): each mode against a fresh instance (EC P-256 CA) per store and worker
count, driven from separate load processes with pre-generated EC P-256 CSRs, closed loop;
then an open loop at 80% of the closed-loop peak for p99 under steady load.  Server CPU is
read from /proc for the whole server process tree.  memory: one worker's RSS with idle TLS
connections open and over a long run.  bigstore: a million certificate records.  floor: the
same TLS and HTTP stack answering without estkit's work, and doing only the work no
enrollment can skip (the work floor), beside estkit, per mode.
instructions: instructions per enrollment under valgrind's callgrind, which unlike CPU time
do not move with the host's load.  compare (not in all): this tree against a git revision,
both serving at once, as paired ratios of server CPU per enrollment.

Each part writes its tables into bench/RESULTS.md between markers (bench/report.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.bigstore import bigstore_table, measure
from bench.compare import compare, comparison_table
from bench.floor import FLOOR_MODES, floor_table, measure_floor
from bench.instance import STORES
from bench.instructions import (
    CLIENTS,
    WARM_UP,
    instructions_table,
    measure_instructions,
)
from bench.matrix import MODES, MatrixPlan, matrix_table, run_matrix
from bench.memory import measure_memory, memory_table
from bench.report import stamp, update_results

PARTS = ("matrix", "memory", "bigstore", "floor", "instructions")
EXTRA_PARTS = ("compare",)
"""Not in "all": it needs a revision to compare with."""


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--parts", nargs="+", default=["matrix"], choices=[*PARTS, *EXTRA_PARTS, "all"]
    )
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--clients", type=int, default=4, help="load processes (closed loop)")
    parser.add_argument("--stores", nargs="+", default=list(STORES), choices=STORES)
    parser.add_argument(
        "--workers",
        nargs="+",
        type=int,
        default=sorted({1, os.cpu_count() or 1}),
        help="worker counts (default 1 and the CPU count)",
    )
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument(
        "--open-loop-modes",
        nargs="*",
        default=["tls12-new", "keepalive"],
        choices=MODES,
        help="modes also run paced at 80%% of their peak (first store and worker count)",
    )
    parser.add_argument("--memory-connections", type=int, default=1000)
    parser.add_argument("--memory-enrollments", type=int, default=100_000)
    parser.add_argument("--memory-store", default="sqlite", choices=STORES)
    parser.add_argument("--records", type=int, default=1_000_000, help="bigstore records")
    parser.add_argument("--revoked", type=int, default=100_000, help="bigstore revoked records")
    parser.add_argument(
        "--instruction-count", type=int, default=200, help="counted requests per mode"
    )
    parser.add_argument(
        "--baseline", default="HEAD", help="compare: the git revision this tree is compared with"
    )
    parser.add_argument("--pairs", type=int, default=16, help="compare: bursts per version")
    parser.add_argument("--burst", type=float, default=1.5, help="compare: seconds per burst")
    parser.add_argument(
        "--compare-workers", type=int, default=1, help="compare: worker processes per server"
    )
    parser.add_argument("--results", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args(argv)
    if "all" in args.parts:  # with any extra part asked for beside it
        args.parts = [*PARTS, *(part for part in args.parts if part in EXTRA_PARTS)]
    return args


def workers_text(workers: int) -> str:
    return "one worker" if workers == 1 else f"{workers} workers"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load = (
        f"Load generator on the same machine ({args.clients} processes; pre-generated "
        "EC P-256 CSRs, EC P-256 CA)"
    )
    with tempfile.TemporaryDirectory(prefix="estkit-bench-") as tmp:
        directory = Path(tmp)
        if "matrix" in args.parts:
            plan = MatrixPlan(
                args.stores,
                args.workers,
                args.modes,
                args.clients,
                args.duration,
                args.open_loop_modes,
            )
            table = matrix_table(run_matrix(plan, directory, progress))
            print(table)
            update_results(
                args.results,
                "matrix",
                f"{stamp()} {load}; {args.duration:g} s per row. Closed loop: each process "
                "sends its next request when the previous one is answered (peak throughput). "
                f"Open loop: {2 * args.clients} processes start requests on a fixed schedule "
                "at 80% of the closed-loop peak; latency counts from when each request was "
                "due. Server CPU: utime+stime of the server and all its processes (supervisor "
                "and workers) from /proc, divided by successful enrollments.\n\n" + table,
            )
        if "memory" in args.parts:
            result = measure_memory(
                args.memory_store,
                args.memory_connections,
                args.memory_enrollments,
                args.clients,
                directory,
                progress,
            )
            table = memory_table(result)
            print(table)
            update_results(
                args.results,
                "memory",
                f"{stamp()} {load}; keep-alive enrollments, closed loop.\n\n{table}",
            )
        if "floor" in args.parts:
            modes = [mode for mode in args.modes if mode in FLOOR_MODES]
            floor_rows = measure_floor(directory, modes, args.clients, args.duration, progress)
            table = floor_table(floor_rows)
            print(table)
            update_results(
                args.results,
                "floor",
                f"{stamp()} {load}; {args.duration:g} s per row, closed loop. The floor server "
                "(bench/floor.py) has estkit's TLS context, uvloop and aiohttp and answers each "
                "POST with a fixed 700-byte body. The work floor server, on the same stack, "
                "does only the work no enrollment can skip: it checks the CSR's signature, "
                "signs a certificate and commits it to SQLite with an fsync, on the event loop, "
                "with no authentication, policy, extensions, audit event or access log. "
                "estkit (SQLite, one worker) runs on the same instance right after them, per "
                "mode. Server CPU from /proc as in the matrix.\n\n" + table,
            )
        if "instructions" in args.parts:
            counts = measure_instructions(directory, args.modes, args.instruction_count, progress)
            table = instructions_table(counts)
            print(table)
            update_results(
                args.results,
                "instructions",
                f"{stamp()} Valgrind's callgrind in the server process (SQLite, one worker) "
                f"and in the floor server, {CLIENTS} load processes; after {WARM_UP} requests "
                f"to warm up, {args.instruction_count} counted requests per mode. Kernel "
                "time and thread hand-offs are not in these counts (bench/instructions.py).\n\n"
                + table,
            )
        if "compare" in args.parts:
            revision = subprocess.run(
                ["git", "rev-parse", "--short", args.baseline],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            comparisons = compare(
                revision,
                args.modes,
                args.clients,
                args.pairs,
                args.burst,
                directory,
                progress,
                args.compare_workers,
            )
            table = comparison_table(comparisons)
            print(table)
            update_results(
                args.results,
                "compare",
                f"{stamp()} {load}. This tree against {revision}, both serving at once "
                f"(SQLite, {workers_text(args.compare_workers)} each); per mode {args.pairs} "
                f"pairs of {args.burst:g} s "
                "closed-loop bursts, alternating between the two (order flipped every pair). "
                "Ratio: this tree's server CPU per enrollment over the baseline's, per pair "
                "(bench/compare.py).\n\n" + table,
            )
        if "bigstore" in args.parts:
            results = [
                measure(
                    store,
                    args.records,
                    args.revoked,
                    args.clients,
                    args.duration,
                    directory,
                    progress,
                )
                for store in args.stores
            ]
            table = bigstore_table(results)
            print(table)
            update_results(
                args.results,
                "bigstore",
                f"{stamp()} {load}. One instance per store: served empty, then seeded "
                f"with {args.records:,} records ({args.revoked:,} revoked) and served again "
                f"(one worker, keep-alive enrollments for {args.duration:g} s, then 300 "
                "sequential OCSP POSTs for random stored serials; median). `cert list` "
                "and `estkit crl` are whole CLI processes (median of 5 for the list); CRL "
                "generation is CrlPublisher.refresh (read revocations, build, sign, store), "
                "median of 3. Subject searched: `"
                + results[0].needle
                + "` (10 matches).\n\n"
                + table,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
