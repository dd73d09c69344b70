"""What the server processes cost, from /proc: CPU time of a process tree, resident memory.

``estkit serve --workers N`` is a supervisor with N forked workers, so the server's CPU is
the whole tree's: each live process's utime + stime, plus cutime + cstime (the CPU of
children already reaped, which the kernel adds to the parent at wait()), counted once per
process.  A worker replaced during a run is therefore still counted.
"""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    """Direct children of pid (all its threads' children)."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            found.extend(int(child) for child in text)
    except FileNotFoundError:
        pass
    return found


def tree(pid: int) -> list[int]:
    """pid and every live descendant."""
    pids = [pid]
    for child in children(pid):
        pids.extend(tree(child))
    return pids


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by pid, its live descendants and their reaped children."""
    total = 0
    for member in tree(pid):
        try:
            fields = _stat_fields(member)
        except FileNotFoundError:
            continue  # exited between listing and reading: its parent's cutime has it
        # fields[0] is state (field 3): utime, stime, cutime, cstime are fields 14-17.
        total += sum(int(value) for value in fields[11:15])
    return total / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    """VmRSS of one process, in MB (10^6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise ValueError(f"no VmRSS for process {pid}")


def open_sockets(pid: int) -> int:
    """How many sockets the process holds (a check that idle connections stay open)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += fd.readlink().name.startswith("socket:")
        except OSError:
            continue
    return count
