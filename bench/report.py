"""bench/RESULTS.md: each measured part is written between its own markers, so re-running one
part replaces only its tables and hand-written notes outside the markers stay."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

TITLES = {
    "matrix": "Enrollment matrix",
    "memory": "Memory: idle connections and long runs",
    "bigstore": "Large store: 1,000,000 certificate records",
    "floor": "Floors: TLS and HTTP alone, and the work no enrollment can skip",
    "instructions": "Instructions per enrollment (callgrind)",
    "compare": "This tree against a revision (paired ratios)",
}


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kb = int(line.split()[1])
    return (
        f"{os.cpu_count()} CPUs ({model}), {memory_kb / 1e6:.0f} GB RAM, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )


def stamp() -> str:
    return f"Measured {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} on {machine()}."


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def _markers(part: str) -> tuple[str, str]:
    return (
        f"<!-- bench:{part} begin: written by `python -m bench.run`, edit outside -->",
        f"<!-- bench:{part} end -->",
    )


def update_results(path: Path, part: str, body: str) -> None:
    """Replace the part's section (or add it at the end), keeping everything else."""
    begin, end = _markers(part)
    text = path.read_text() if path.exists() else "# estkit benchmark results\n"
    section = f"{begin}\n{body.strip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + f"\n\n## {TITLES[part]}\n\n{section}\n"
    path.write_text(text)
