"""How fast the size guard refuses huge expansions: not a test (moved out of tests/test_errors.py,
where it was a wall-clock assertion).

`fractalc check specs/rf_c3d4.fr --set columns=N` for N = 60 (2^60 nodes), 1000 and 10^9 (a
billion nested rule calls) must be refused at once: the guard evaluates shapes only, with rule
calls memoised. Prints the median of --repeats runs per N (in process, through the CLI's main)
and exits 1 if a median exceeds --limit seconds (default 2).

    .venv/bin/python benchmarks/bench_guard.py [--repeats 5] [--limit 2.0]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def refuse_once(columns: str) -> float:
    from fractalc.cli import main
    err = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.suppress(SystemExit):
        main(["check", str(ROOT / "specs" / "rf_c3d4.fr"), "--set", f"columns={columns}"])
    dt = time.perf_counter() - t
    if "expansion refused" not in err.getvalue():
        raise SystemExit(f"columns={columns}: not refused by the size guard:\n{err.getvalue()}")
    return dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--limit", type=float, default=2.0, help="seconds a median may take")
    args = ap.parse_args(argv)
    worst = 0.0
    for cols in ("60", "1000", "1000000000"):
        times = [refuse_once(cols) for _ in range(args.repeats)]
        med = statistics.median(times)
        worst = max(worst, med)
        print(f"columns={cols:>10}: refused in {1e3 * med:8.2f} ms (median of {args.repeats}, "
              f"min {1e3 * min(times):.2f} ms)")
    if worst > args.limit:
        print(f"slower than {args.limit} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
