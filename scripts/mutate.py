"""Mutation check: does the suite catch the bugs its tests are named for? (issue 19)

Each mutation is one deliberate bug, a (file, old text, new text) edit, with the tests that
should catch it. For each one this script copies the working tree (not .venv, build/ or .git)
into a temporary directory, applies the edit there, runs the named tests against that copy and
reports ``caught`` (the tests failed), ``survived`` (they passed: a hole in the suite) or
``error`` (the old text is gone, e.g. the file was rewritten: update the mutation).

The project venv has an editable install whose import hook (scikit-build-core's redirect
finder, first on sys.meta_path) maps `fractalc` to the source tree. The copy therefore gets a
`sitecustomize.py` that removes that hook, the package layout of the wheel as symlinks
(fractalc/backends -> backends, fractalc/grammars -> grammars, fractalc/specs -> specs) and the
built native extension; its directory goes first on PYTHONPATH (subprocesses inherit it). Before
the tests run, a probe checks that `fractalc`, `fractalc.backends` and the mutated file's module
are imported from the copy, and that the mutated text is what they hold. Native-code mutations
(C++) would need a rebuild and are not included.

    .venv/bin/python scripts/mutate.py --list
    .venv/bin/python scripts/mutate.py resume-no-optimizer-restore [more names]
    .venv/bin/python scripts/mutate.py --all [--baseline]    # --baseline: unmutated copy first
    .venv/bin/python scripts/mutate.py --all --tests-from REV  # the suite of an older commit

Exit status 0 when every mutation run was caught, 1 otherwise.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str  # relative to the repository root
    old: str
    new: str
    tests: tuple[str, ...]  # pytest arguments (paths, -k expressions)
    what: str
    also: tuple[tuple[str, str, str], ...] = ()  # more (file, old, new) edits of the same bug

    def edits(self) -> tuple[tuple[str, str, str], ...]:
        return ((self.file, self.old, self.new),) + self.also


M = Mutation
MUTATIONS: tuple[Mutation, ...] = (
    # ---- training: resume inside a stage
    M("resume-no-optimizer-restore", "fractalc/training/loop.py",
      'opt.load_state_dict(ckpt["optimizer"])', "pass",
      ("tests/test_train.py", "-k", "resume"), "resume does not restore the optimizer (Adam moments)"),
    M("resume-no-scheduler-restore", "fractalc/training/loop.py",
      'sched.load_state_dict(ckpt["scheduler"])', "pass",
      ("tests/test_train.py", "-k", "resume"), "resume does not restore the LR schedule"),
    M("resume-no-rng-restore", "fractalc/training/loop.py",
      'torch.set_rng_state(ckpt["rng"])', "pass",
      ("tests/test_train.py", "-k", "resume"), "resume does not restore the RNG (drop-path draws)"),
    # ---- cost model
    M("cost-groups-ignored", "fractalc/ir/ops.py",
      'return (op.out_channels, ins[0][0] // getattr(op, "groups", 1), op.kernel, op.kernel)',
      "return (op.out_channels, ins[0][0], op.kernel, op.kernel)",
      ("tests/test_cost.py",), "grouped conv weights counted as dense (the op table's conv weight)"),
    M("cost-conv-bias-dropped", "fractalc/ir/ops.py",
      'return (w, Tensor("bias", (op.out_channels,))) if op.bias else (w,)', "return (w,)",
      ("tests/test_cost.py",), "a conv's bias is not counted (the op table's conv tensors)"),
    M("cost-bn-halved", "fractalc/cost.py",
      'float_params=by_role["float"] + by_role["bn"]', 'float_params=by_role["float"] + by_role["bn"] // 2',
      ("tests/test_cost.py",), "BN scale+shift counted once (already caught before issue 19)"),
    # ---- torch backend, as emitted by `fractalc compile --target torch` (these files are
    # copied into the emitted source, so a library-vs-emitted comparison cannot see them)
    M("binarize-alpha-max", "backends/torch/binarize.py",
      "alpha = w.detach().abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)",
      "alpha = w.detach().abs().amax(dim=tuple(range(1, w.dim())), keepdim=True)",
      ("tests/test_torch_source.py",), "alpha = max |W| instead of mean |W|"),
    M("binarize-sign-zero", "backends/torch/binarize.py",
      "torch.where(x < 0, -torch.ones_like(x)", "torch.where(x <= 0, -torch.ones_like(x)",
      ("tests/test_torch_source.py",), "sign(0) = -1"),
    M("binarize-approxsign-backward", "backends/torch/binarize.py",
      "torch.clamp(2.0 - 2.0 * x.abs(), min=0.0)", "torch.clamp(1.0 - x.abs(), min=0.0)",
      ("tests/test_torch_source.py",), "ApproxSign's backward halved (a wrong gradient formula)"),
    M("emitted-join-sum", "backends/torch/drop_path.py",
      "    return out / len(xs)\n", "    return out\n",
      ("tests/test_torch_source.py",), "a join sums instead of averaging (emitted source)"),
    M("join-sum", "backends/torch/drop_path.py",
      "    return out / len(xs)\n", "    return out\n",
      ("tests/test_torch_join.py",), "a join sums (already caught before issue 19)"),
    # ---- eval: engines must agree on logits, not only on classes
    M("eval-xnor-logits-scaled", "fractalc/training/evaluate.py",
      "return np.concatenate([sess.run(xs[i:i + batch]) for i in range(0, len(xs), batch)])",
      "return 2 * np.concatenate([sess.run(xs[i:i + batch]) for i in range(0, len(xs), batch)])",
      ("tests/test_train.py", "-k", "eval"), "the xnor engine's logits doubled (same classes)"),
    M("eval-onnx-logits-shifted", "fractalc/training/evaluate.py",
      "return np.concatenate([sess.run(None, {name: xs[i:i + batch]})[0]",
      "return 0.5 + np.concatenate([sess.run(None, {name: xs[i:i + batch]})[0]",
      ("tests/test_train.py", "-k", "eval"), "onnxruntime's logits shifted by 0.5 (same classes)"),
    # ---- runtime vs torch on every spec
    M("lowered-join-divides-by-2", "backends/onnx/builder.py",
      'b.const(f"count{len(ins)}", np.float32(len(ins)))', 'b.const(f"count{len(ins)}", np.float32(2))',
      ("tests/test_runtime_specs.py", "-k", "spec_exact"),
      "joins of 3+ inputs divide by 2 in the lowered model (reference and runtime agree)"),
    M("runtime-join-divisor-ulp", "backends/xnor/plan.py",
      "div = np.float32(d.reshape(()))",
      "div = np.float32(d.reshape(())); div = div if int(div) & (int(div) - 1) == 0 else "
      "np.nextafter(div, np.float32(9))",
      ("tests/test_runtime_specs.py", "-k", "spec_exact"),
      "the runtime's 3- and 5-input joins divide by a divisor 1 ulp too large, fused and unfused "
      "(flips only at near-ties)",
      also=(("backends/xnor/floatplan.py",
             "        if c.dtype == np.float32 and c.size == 1 and c.ndim <= 1:\n",
             "        if c.dtype == np.float32 and c.size == 1 and c.ndim <= 1:\n"
             "            c = c if int(c.reshape(())) & (int(c.reshape(())) - 1) == 0 else "
             "np.nextafter(c, np.float32(9))\n"),)),
    # ---- scaler
    M("scaler-off-by-one", "fractalc/variants/solver.py",
      "while hi - lo > 1:  # bisection", "while hi - lo > 2:  # bisection",
      ("tests/test_scale.py",), "bisection stops one short (already caught before issue 19)"),
)


def _ignore(dirpath: str, names: list[str]) -> set[str]:
    skip = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", ".hypothesis", "runs", "out"}
    if Path(dirpath).resolve() == ROOT:
        return {n for n in names if n in skip}
    return {n for n in names if n in {"__pycache__", ".pytest_cache"}}


SITECUSTOMIZE = '''# written by scripts/mutate.py: import fractalc from this copy, not the editable install
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()
                    and "ScikitBuild" not in type(f).__name__]
for _m in [m for m in sys.modules if m == "fractalc" or m.startswith("fractalc.")]:
    del sys.modules[_m]
'''

PROBE = '''import importlib, sys
from pathlib import Path
copy = Path(sys.argv[1]).resolve()
import fractalc, fractalc.backends
for m in (fractalc, fractalc.backends):
    assert Path(m.__path__[0]).resolve().is_relative_to(copy), (m.__name__, m.__path__)
mod = importlib.import_module(sys.argv[2])
f = Path(mod.__file__).resolve()
assert f.is_relative_to(copy), (sys.argv[2], f)
assert sys.argv[3] in f.read_text(), "the imported module does not hold the mutated text"
print(f)
'''


def make_copy(dest: Path, tests_from: str | None = None) -> Path:
    tree = dest / "tree"
    shutil.copytree(ROOT, tree, ignore=_ignore, symlinks=True)
    if tests_from:  # tests/ as of another commit (to see what an older suite let through)
        shutil.rmtree(tree / "tests")
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", tests_from, "tests"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    for link, target in (("fractalc/backends", "../backends"), ("fractalc/grammars", "../grammars"),
                         ("fractalc/specs", "../specs")):
        if not (tree / link).exists():
            os.symlink(target, tree / link)
    # the built native extension (from the venv's editable install or the build directory)
    sos = glob.glob(str(ROOT / ".venv" / "lib" / "python3*" / "site-packages" / "fractalc" / "backends"
                        / "xnor" / "_xnor*.so"))
    for so in sos[:1]:
        shutil.copy2(so, tree / "backends" / "xnor" / Path(so).name)
    boot = dest / "boot"
    boot.mkdir()
    (boot / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return tree


def module_of(rel: str) -> str:
    p = Path(rel).with_suffix("")
    parts = list(p.parts)
    if parts[0] == "backends":
        parts = ["fractalc"] + parts
    return ".".join(parts)


def run_one(m: Mutation | None, verbose: bool = False, timeout: int = 1800,
            tests_from: str | None = None) -> tuple[str, str]:
    with tempfile.TemporaryDirectory(prefix="fractalc-mutant-") as tmp:
        tree = make_copy(Path(tmp), tests_from)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(Path(tmp) / "boot")]),
               "PYTHONDONTWRITEBYTECODE": "1"}
        if m is not None:
            for file, old, new in m.edits():
                path = tree / file
                text = path.read_text()
                n = text.count(old)
                if n != 1:
                    return "error", f"old text found {n} times in {file}"
                path.write_text(text.replace(old, new))
            for file, old, new in m.edits():
                probe = subprocess.run([PY, "-c", PROBE, str(tree), module_of(file), new],
                                       env=env, cwd=tree, capture_output=True, text=True)
                if probe.returncode != 0:
                    return "error", "the copy is not what gets imported: " + probe.stderr.strip()[-400:]
            tests = m.tests
        else:
            tests = tuple(sorted({t for mm in MUTATIONS for t in mm.tests if t.startswith("tests/")}))
        cmd = [PY, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
        t = time.time()
        try:
            r = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "error", f"timed out after {timeout} s"
        last = (r.stdout.strip().splitlines() or [""])[-1]
        if verbose:
            print(r.stdout[-4000:], r.stderr[-2000:], sep="\n")
        if r.returncode == 0:
            return ("ok" if m is None else "survived"), f"{last} ({time.time() - t:.0f} s)"
        if r.returncode == 1:
            failed = [l for l in r.stdout.splitlines() if l.startswith("FAILED")]
            return ("caught" if m is not None else "baseline fails"), \
                f"{failed[0][7:] if failed else last} ({time.time() - t:.0f} s)"
        return "error", f"pytest exit {r.returncode}: {last}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="mutations to run (see --list)")
    ap.add_argument("--all", action="store_true", help="run every mutation")
    ap.add_argument("--list", action="store_true", help="list the mutations")
    ap.add_argument("--baseline", action="store_true", help="first run every named test on an unmutated copy")
    ap.add_argument("--tests-from", metavar="REV", help="run the tests/ directory of git revision REV")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    by_name = {m.name: m for m in MUTATIONS}
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name:32} {m.file:34} {' '.join(m.tests):45} {m.what}")
        return 0
    unknown = [n for n in args.names if n not in by_name]
    if unknown:
        ap.error(f"unknown mutation(s) {', '.join(unknown)}; see --list")
    chosen = list(MUTATIONS) if args.all else [by_name[n] for n in args.names]
    if not chosen and not args.baseline:
        ap.error("name mutations, or --all, or --list")
    rows = []
    if args.baseline:
        status, detail = run_one(None, args.verbose, tests_from=args.tests_from)
        print(f"{'(baseline, unmutated)':32} {status:9} {detail}", flush=True)
        if status != "ok":
            return 1
    for m in chosen:
        status, detail = run_one(m, args.verbose, tests_from=args.tests_from)
        rows.append((m, status))
        print(f"{m.name:32} {status:9} {detail}", flush=True)
    if rows:
        print("\n| mutation | file | tests | result |\n|---|---|---|---|")
        for m, status in rows:
            print(f"| `{m.name}`: {m.what} | `{m.file}` | `{' '.join(m.tests)}` | {status} |")
    return 0 if all(s == "caught" for _, s in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
