"""Start-up time of short commands: `fractalc check` / `stats` against `python -c "import click"`.

Issue #13's target: `fractalc check`/`stats` on any shipped spec within 2.5x the wall time of
importing click (the floor of any click program). Every contender is a fresh process
(subprocess, wall clock around the whole run); each round runs every contender once, in a
rotated order, so load on the machine hits all of them alike. Reports the median (and min) of
--rounds per contender and its ratio to the click median, as a table and as JSON (--json).

Bytecode: the measured tree is compiled first (`compileall`, as `pip install` and `make setup`
do), so the contenders read .pyc files like an installed fractalc; a sandbox that sets
PYTHONDONTWRITEBYTECODE would otherwise compile every fractalc module from source in every
process. The same check from source (a copy of the tree without .pyc files, nothing written) is
timed too, as `(-S, from source)` beside `(-S, this tree)`.

Contenders: click alone; `fractalc check` and `stats --no-layers` on --specs; the same check
with the library's parse cache off (FRACTALC_NO_PARSER_CACHE=1: the bundled library parsed in
the process); `python -S -m fractalc check` from this tree and from a copy without bytecode
(-S skips site, hence the editable install's import redirect, so PYTHONPATH picks the tree);
and with --baseline DIR, the same from another source tree (e.g. `git archive OLD fractalc
grammars specs | tar -x -C DIR`, bytecode-compiled here too), for a before/after in one run.

    .venv/bin/python benchmarks/bench_startup.py [--rounds 21] [--json benchmarks/results/bench_startup.json]
"""
from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 2.5
# A block, Bi-Real, and the largest shipped specs by node count (the target is "any shipped spec";
# the other specs' check/stats fall between these).
DEFAULT_SPECS = ("rf_c3d4.fr", "bireal_resnet18.fr", "drf_c3d4_densenet97.fr", "drf_c3d4_densenet133.fr",
                 "rf_c5d16_resnet149.fr")


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def contenders(specs, baseline: str | None) -> list[tuple[str, list[str], dict]]:
    py = sys.executable
    exe = str(Path(py).with_name("fractalc"))
    fc = [exe] if Path(exe).exists() else [py, "-m", "fractalc"]
    out = [("python -c 'import click'", [py, "-c", "import click"], {})]
    for s in specs:
        path = str(ROOT / "specs" / s)
        out.append((f"check {s}", [*fc, "check", path], {}))
        out.append((f"stats {s}", [*fc, "stats", path, "--no-layers"], {}))
    first = str(ROOT / "specs" / specs[0])
    out.append((f"check {specs[0]} (no caches)", [*fc, "check", first], {"FRACTALC_NO_PARSER_CACHE": "1"}))
    # `python -S` skips site, hence the editable install's import redirect, so PYTHONPATH
    # decides which tree is imported; every tree below is timed that way, a fair set.
    import sysconfig
    site = sysconfig.get_paths()["purelib"]
    trees = [("this tree", ROOT, {}), ("from source", _source_copy(), {"PYTHONDONTWRITEBYTECODE": "1"})]
    if baseline:
        trees.append(("baseline tree", Path(baseline).resolve(), {}))
    for label, tree, env in trees:
        # the tree's own copy of the spec: its relative `import "lib/..."` then reads that
        # tree's bundled library (parse-cached), as `first` does for this tree
        own = tree / "specs" / specs[0]
        out.append((f"check {specs[0]} (-S, {label})",
                    [py, "-S", "-m", "fractalc", "check", str(own) if own.exists() else first],
                    {"PYTHONPATH": f"{tree}{os.pathsep}{site}", **env}))
    return out


def compile_tree(tree: Path) -> None:
    """Write .pyc files for the tree's packages (py_compile writes them whatever
    PYTHONDONTWRITEBYTECODE says; Python reads them either way)."""
    for pkg in ("fractalc", "backends"):
        if (tree / pkg).is_dir():
            compileall.compile_dir(str(tree / pkg), quiet=1, workers=1)


def _source_copy() -> Path:
    """This tree's fractalc package (and what it reads at run time) without any bytecode."""
    import shutil
    dest = Path(_NEUTRAL) / "source"
    if not dest.exists():
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for part in ("fractalc", "grammars", "specs"):
            shutil.copytree(ROOT / part, dest / part, ignore=ignore, symlinks=True)
    return dest


_NEUTRAL = tempfile.mkdtemp(prefix="bench_startup.")


def _cleanup() -> None:
    import shutil
    shutil.rmtree(_NEUTRAL, ignore_errors=True)


# Where a `check` goes, phase by phase, in one fresh process (imports in dependency order, so
# each line is the cost of what that step adds).
_PHASES = r"""
import json, sys, time
t = [time.perf_counter()]
def mark():
    t.append(time.perf_counter())
import click; mark()
import fractalc.cli; mark()
import fractalc.compiler, fractalc.cost; mark()
from fractalc.lang import syntax; syntax.parser(); mark()
from fractalc.lang.resolve import load; spec = load(sys.argv[1]); mark()
from fractalc.compiler import compile_spec; c = compile_spec(spec); mark()
fractalc.cost.depth(c.graph); mark()
# the compile path loads neither networkx (the IR graph has its own adjacency) nor lark (the
# parser is generated ahead of time)
for heavy in ("networkx", "lark"):
    assert heavy not in sys.modules, heavy + " was imported"
print(json.dumps([b - a for a, b in zip(t, t[1:])]))
"""
PHASES = ("import click",
          "import fractalc.cli and its commands (more)",
          "import the compiler's modules (more, the parser's included)",
          "load the generated parser's tables", "parse + resolve the spec and its imports",
          "expand + passes (collapse_joins, verify)", "depth")


def breakdown(spec: str, rounds: int) -> list[tuple[str, float]]:
    runs = []
    for _ in range(rounds):
        r = subprocess.run([sys.executable, "-c", _PHASES, spec], capture_output=True, text=True,
                           timeout=300, cwd=_NEUTRAL)
        if r.returncode != 0:
            raise SystemExit(r.stderr[-2000:])
        runs.append(json.loads(r.stdout))
    return [(name, statistics.median(x[i] for x in runs)) for i, name in enumerate(PHASES)]


def run_once(cmd, env_extra) -> float:
    env = {**os.environ, **env_extra}
    t = time.perf_counter()
    # cwd: a neutral folder, so `python -m fractalc` does not import the tree it is run from
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, timeout=300,
                       cwd=_NEUTRAL)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr.decode()[-2000:]}")
    return dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--specs", nargs="+", default=list(DEFAULT_SPECS))
    ap.add_argument("--baseline", default=None, help="another source tree to time `check` from")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    compile_tree(ROOT)
    if args.baseline:
        compile_tree(Path(args.baseline))
    try:
        return _run(args)
    finally:
        _cleanup()


def _run(args) -> int:
    cs = contenders(args.specs, args.baseline)
    for _, cmd, env in cs:  # untimed: warms the OS file cache and the parser cache
        run_once(cmd, env)
    load0 = os.getloadavg()[0]
    times: dict[str, list[float]] = {name: [] for name, _, _ in cs}
    for r in range(args.rounds):
        k = r % len(cs)
        for name, cmd, env in cs[k:] + cs[:k]:
            times[name].append(run_once(cmd, env))
    base = statistics.median(times[cs[0][0]])
    rows = []
    for name, _, _ in cs:
        med = statistics.median(times[name])
        rows.append({"contender": name, "median_s": round(med, 4), "min_s": round(min(times[name]), 4),
                     "ratio": round(med / base, 2)})
    cpu = cpu_model()
    print(f"start-up, {args.rounds} interleaved rounds, CPU {cpu}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; target: ratio <= {TARGET}")
    load1 = os.getloadavg()[0]
    print(f"load average (1 min) before / after the timed rounds: {load0:.2f} / {load1:.2f}")
    print(f"bytecode: compiled first for {ROOT.name}/fractalc{' and the baseline' if args.baseline else ''} "
          "(.pyc, as an installed package has); '(-S, from source)' runs a copy without it")
    w = max(len(r["contender"]) for r in rows)
    print(f"{'contender':<{w}}  median ms   min ms   x click")
    for r in rows:
        print(f"{r['contender']:<{w}}  {1e3 * r['median_s']:9.1f}  {1e3 * r['min_s']:7.1f}  {r['ratio']:8.2f}")
    commands = [r for r in rows[1:] if "(" not in r["contender"]]
    worst = max(commands, key=lambda r: r["ratio"])
    print(f"worst check/stats: {worst['contender']} at {worst['ratio']}x click "
          f"({'meets' if worst['ratio'] <= TARGET else 'misses'} the {TARGET}x target)")
    spec0 = str(ROOT / "specs" / args.specs[0])
    phases = breakdown(spec0, args.rounds)
    print(f"\nwhere `check {args.specs[0]}` spends its time (in-process phases, median of {args.rounds}; "
          "the interpreter's own start is the rest):")
    for name, dt in phases:
        print(f"  {name:<60} {1e3 * dt:7.1f} ms")
    if args.json:
        doc = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
               "rounds": args.rounds, "target_ratio": TARGET, "bytecode": "compiled first",
               "load_average_1min": [round(load0, 2), round(load1, 2)], "rows": rows,
               "phases_ms": {name: round(1e3 * dt, 2) for name, dt in phases}}
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
