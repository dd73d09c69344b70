"""This tree against a git revision, side by side: server CPU per enrollment as paired ratios.

On a shared machine the CPU an enrollment costs moves by tens of percent from minute to
minute (session 6 saw the same code at 1.8 and at 3.2 ms), far more than most changes are
worth, so runs of two versions one after the other compare the host's moods as much as the
code.  Here both versions serve at the same time, each on an instance of its own, and the
load alternates between them in short bursts (the order flipped every pair); each pair gives
one ratio, measured under nearly the same conditions, and the median of the ratios is the
result.  The baseline's server runs from a temporary worktree of the revision; its instance
is made by its own ``estkit init``, and both must have the same schema revision (the load's
Basic account is added with this tree's store).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.estserver import start_server

from bench.instance import fresh_instance
from bench.matrix import Target
from bench.report import markdown_table

REPOSITORY = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Comparison:
    mode: str
    baseline_ms: list[float]
    current_ms: list[float]

    @property
    def ratios(self) -> list[float]:
        return [new / old for old, new in zip(self.baseline_ms, self.current_ms, strict=True)]


@contextlib.contextmanager
def worktree(revision: str, directory: Path) -> Iterator[Path]:
    """A checkout of revision (removed on exit), whose ``src`` the baseline imports."""
    path = directory / "baseline"
    git = ["git", "-C", str(REPOSITORY)]
    subprocess.run([*git, "worktree", "add", "--detach", str(path), revision], check=True)
    try:
        yield path
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(path)], check=True)


@contextlib.contextmanager
def importing_from(source: Path | None) -> Iterator[None]:
    """Processes started inside import estkit from source/src (None: this tree)."""
    before = os.environ.get("PYTHONPATH")
    if source is not None:
        os.environ["PYTHONPATH"] = str(source / "src")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def compare(
    revision: str,
    modes: Sequence[str],
    clients: int,
    pairs: int,
    burst: float,
    directory: Path,
    progress: Callable[[str], None],
    workers: int = 1,
) -> list[Comparison]:
    with contextlib.ExitStack() as stack:
        baseline_source = stack.enter_context(worktree(revision, directory))
        targets: list[Target] = []
        for name, source in (("baseline", baseline_source), ("current", None)):
            with importing_from(source):
                data_dir = stack.enter_context(fresh_instance(directory / name, "sqlite"))
                server = start_server(data_dir, workers=workers)
            stack.callback(server.stop)
            targets.append(Target.prepare(server, "sqlite", workers, data_dir, clients))
        results = []
        for mode in modes:
            for target in targets:  # warm up: first-use imports and caches
                target.run(mode, clients, burst)
            measured: list[list[float]] = [[], []]
            for pair in range(pairs):
                order = (0, 1) if pair % 2 == 0 else (1, 0)
                for index in order:
                    result = targets[index].run(mode, clients, burst)
                    measured[index].append(result.cpu_ms_per_enrollment)
            comparison = Comparison(mode, *measured)
            results.append(comparison)
            progress(f"compare {mode}: ratio {statistics.median(comparison.ratios):.3f}")
        return results


def comparison_table(rows: list[Comparison]) -> str:
    def quartiles(values: list[float]) -> str:
        low, _, high = statistics.quantiles(values, n=4)
        return f"{low:.3f}-{high:.3f}"

    return markdown_table(
        (
            "mode",
            "pairs",
            "baseline: CPU ms/enrollment (median)",
            "this tree: CPU ms/enrollment (median)",
            "ratio (median of pairs)",
            "middle half of the ratios",
        ),
        (
            (
                row.mode,
                str(len(row.ratios)),
                f"{statistics.median(row.baseline_ms):.2f}",
                f"{statistics.median(row.current_ms):.2f}",
                f"{statistics.median(row.ratios):.3f}",
                quartiles(row.ratios),
            )
            for row in rows
        ),
    )
