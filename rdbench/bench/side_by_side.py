"""Two results folders of one suite side by side: trainings per hour and whether the metrics agree.

``python -m rdbench.bench.side_by_side BEFORE AFTER [--wall SECONDS SECONDS]`` reads every
``record.json`` under each folder (the suite's runs and its selection candidates), and prints

* the trainings in each folder, the wall time (``--wall``: the two ``rdbench run`` commands as
  timed by the caller; otherwise the span from the first record's start to the last one's end,
  which leaves out the processes' start-up) and the trainings per hour, with their ratio;
* for every run and seed in both, its ``val/mR`` and ``test/mR`` in each, and how many of its
  metrics are equal to the last digit, with the largest difference.

It compares what two versions of the code (two ``git worktree`` checkouts, say) produced from
the same suite file; docs/runs-per-hour.md shows the procedure and one result.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from rdbench.results.record import Record


def records(folder: Path) -> dict[tuple[str, ...], Record | None]:
    """Every record under ``folder`` (None where it is not a valid record), keyed by its path
    relative to ``folder`` (run, seed, candidate)."""
    return {tuple(path.relative_to(folder).parent.parts): Record.read(path) for path in sorted(folder.rglob("record.json"))}


def _span(recs: list[Record]) -> float:
    starts = [datetime.datetime.fromisoformat(r.started_at) for r in recs if r.started_at]
    ends = [datetime.datetime.fromisoformat(r.finished_at) for r in recs if r.finished_at]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else float("nan")


def trained(rec: Record) -> bool:
    """Whether the record's run trained (a seed that reused a selection candidate did not)."""
    return not (rec.selection or {}).get("trained_in")


def compare(before: Path, after: Path, wall: tuple[float, float] | None = None) -> list[str]:
    a, b = records(before), records(after)
    lines = []
    rates = []
    for name, recs, seconds in (("before", a, wall[0] if wall else None), ("after", b, wall[1] if wall else None)):
        ok = [r for r in recs.values() if r is not None and r.status == "success"]
        n = sum(trained(r) for r in ok)
        seconds = seconds if seconds is not None else _span(ok)
        rates.append(n / seconds * 3600)
        lines.append(f"{name}: {n} trainings ({len(ok)} records, {len(recs) - len(ok)} not successful) in {seconds:.0f} s: "
                     f"{rates[-1]:.1f} trainings per hour")
    lines.append(f"after / before: {rates[1] / rates[0]:.2f}x trainings per hour")
    shared = sorted(k for k in set(a) & set(b) if a[k] is not None and b[k] is not None)
    equal = total = 0
    worst = 0.0
    rows = []
    for key in shared:
        ma, mb = a[key].metrics, b[key].metrics
        names = sorted(k for k in set(ma) & set(mb) if isinstance(ma[k], (int, float)) and isinstance(mb[k], (int, float)))
        same = sum(ma[k] == mb[k] for k in names)
        equal, total = equal + same, total + len(names)
        diff = max((abs(ma[k] - mb[k]) for k in names), default=0.0)
        worst = max(worst, diff)
        if "test/mR" in names or "val/mR" in names:
            shown = " ".join(f"{m} {ma[m]:.3f} -> {mb[m]:.3f}" for m in ("val/mR", "test/mR") if m in names)
            rows.append(f"  {'/'.join(key)}: {shown} ({same}/{len(names)} metrics equal)")
    lines.append(f"metrics of the {len(shared)} records in both: {equal} of {total} equal, largest difference {worst:.4f}")
    return lines + rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rdbench.bench.side_by_side", description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--wall", type=float, nargs=2, metavar=("BEFORE_S", "AFTER_S"),
                        help="wall-clock seconds of the two rdbench run commands")
    args = parser.parse_args(argv)
    for line in compare(args.before, args.after, tuple(args.wall) if args.wall else None):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
