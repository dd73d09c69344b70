"""Instructions per enrollment, counted by valgrind's callgrind in the server process.

CPU milliseconds from /proc move with whatever else the host runs (on a shared VM, by two to
three times between days), so code is compared by ratios measured in one run.  An instruction
count does not move: the same code, inputs and libraries give the same count on any day, so
counts from different sessions compare directly.  It leaves out the kernel's share (the
system calls, the fsync) and the cost of hand-offs between threads, which the CPU
milliseconds of the matrix include.  The floor server (bench/floor.py) is counted the same
way, per mode, beside estkit on the same instance (SQLite, one worker).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.floor import FLOOR_MODES, floor_beside_estkit
from bench.matrix import Target
from bench.report import markdown_table

WARM_UP = 20
"""Requests before counting starts: first-use imports and caches are not the steady state."""
CLIENTS = 2


@dataclass(frozen=True)
class InstructionRow:
    mode: str
    estkit: float
    """Instructions per enrollment."""
    floor: float | None
    """Instructions per request of the floor server (None: a mode it does not serve)."""


class Counted:
    """A process under callgrind whose count is zeroed and read on demand."""

    def __init__(self, pid: int, out_dir: Path) -> None:
        self.pid = pid
        self.out_dir = out_dir

    def zero(self) -> None:
        _control("--zero", self.pid)

    def read(self) -> int:
        """Instructions since the last zero (callgrind dumps them to a new file)."""
        _control("--dump", self.pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            dumps = sorted(
                self.out_dir.glob(f"cg.{self.pid}.*"), key=lambda path: path.stat().st_mtime
            )
            if dumps:
                text = dumps[-1].read_text(errors="replace")
                found = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
                if found:
                    dumps[-1].unlink()
                    return int(found.group(1))
            time.sleep(0.2)
        raise RuntimeError(f"callgrind wrote no dump for process {self.pid}")


def _control(option: str, pid: int) -> None:
    subprocess.run(["callgrind_control", option, str(pid)], check=True, capture_output=True)


def _per_request(target: Target, counted: Counted, mode: str, count: int) -> float:
    target.run(mode, CLIENTS, 600, count=WARM_UP)
    counted.zero()
    result = target.run(mode, CLIENTS, 600, count=count)
    instructions = counted.read()
    if result.failures or not result.enrollments:
        raise RuntimeError(f"{mode}: {result.failures} of the counted requests failed")
    return instructions / result.enrollments


def measure_instructions(
    directory: Path, modes: Sequence[str], count: int, progress: Callable[[str], None]
) -> list[InstructionRow]:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("the instructions part needs valgrind (Debian package valgrind)")
    out_dir = Path(tempfile.mkdtemp(prefix="callgrind-", dir=directory))
    wrapper = [
        "valgrind",
        "--tool=callgrind",
        "-q",
        f"--callgrind-out-file={out_dir}/cg.%p",
    ]
    rows = []
    try:
        with floor_beside_estkit(directory / "instructions", CLIENTS, wrapper, 600) as targets:
            target, bare_target = targets.estkit, targets.floor
            counted_server = Counted(target.server.process.pid, out_dir)
            counted_floor = Counted(bare_target.server.process.pid, out_dir)
            for mode in modes:
                estkit = _per_request(target, counted_server, mode, count)
                bare = None
                if mode in FLOOR_MODES:
                    bare = _per_request(bare_target, counted_floor, mode, count)
                progress(f"instructions {mode}: estkit {estkit / 1e6:.2f} M")
                rows.append(InstructionRow(mode, estkit, bare))
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    return rows


def instructions_table(rows: list[InstructionRow]) -> str:
    def millions(value: float | None) -> str:
        return "-" if value is None else f"{value / 1e6:.2f}"

    return markdown_table(
        (
            "mode",
            "estkit: M instructions/enrollment",
            "floor: M instructions/request",
            "estkit's own work, M instructions",
        ),
        (
            (
                row.mode,
                millions(row.estkit),
                millions(row.floor),
                millions(None if row.floor is None else row.estkit - row.floor),
            )
            for row in rows
        ),
    )
