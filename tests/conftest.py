"""Shared fixtures: paths and a compile helper."""
from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
ALL_SPECS = sorted(SPECS.glob("*.fr"))
BLOCK_SPECS = [SPECS / n for n in ("f_c3d4.fr", "rf_c3d4.fr", "drf_c3d4.fr")]


def spec_id(p: Path) -> str:
    return p.stem


def random_state(c, seed: int = 3) -> dict:
    """Seeded weights of compiled `c` with BN statistics and affine parameters away from the
    identity (so every fold rounds): the whole-network exactness tests' random, non-dyadic state."""
    import numpy as np

    from fractalc.backends.onnx import weights
    state, _ = weights.resolve(c, {"seed": seed})
    rng = np.random.default_rng(seed + 2)
    for k, v in state.items():
        if k.endswith("running_var"):
            state[k] = rng.uniform(0.5, 2.0, v.shape).astype(np.float32)
        elif v.ndim == 1 and (k.endswith("running_mean") or k.endswith(".bias")):
            state[k] = rng.normal(0.0, 0.5, v.shape).astype(np.float32)
        elif v.ndim == 1 and k.endswith(".weight"):
            state[k] = rng.normal(1.0, 0.3, v.shape).astype(np.float32)
    return state


def random_input(c, seed: int = 4, batch: int | None = None):
    """A standard-normal float32 input batch for compiled `c`: two images, or one where the
    input is larger than 8 x 8 (the zoo's AlexNets at 224 x 224), unless `batch` is given."""
    import numpy as np
    shape = c.graph.shape("input")
    if batch is None:
        batch = 1 if shape[-1] > 8 else 2
    return np.random.default_rng(seed).standard_normal((batch,) + shape).astype(np.float32)


#: fractalnet_cifar's filters narrowed 8x (64x fewer MACs) where a spec needs 32 x 32 inputs: the
#: exact float emulation of the whole-network tests is slow on its 845 M MACs per image.
NARROW_FILTERS = "[8, 8, 16, 16, 16]"


def small_overrides(spec, block_size: str = "8") -> dict[str, str]:
    """The `--set` overrides of the smallest input a shipped spec (a path or a parsed Spec)
    compiles at, for the whole-network tests: a block spec at block_size x block_size; a network
    at CIFAR size 16 where its poolings allow, else at CIFAR's 32 (narrowed by NARROW_FILTERS
    when it has a five-stage `filters` parameter), else its defaults."""
    from fractalc.compiler import compile_spec
    from fractalc.errors import FractalcError
    from fractalc.lang.resolve import load
    parsed = load(spec) if isinstance(spec, (str, Path)) else spec
    if "dataset" not in parsed.params:
        candidates = [{"size": block_size}, {}]
    else:
        cifar = {"dataset": '"cifar10"'}
        candidates = [{**cifar, "size": "16"}, {**cifar, "filters": NARROW_FILTERS}, cifar, {}]
        if "filters" not in parsed.params:
            del candidates[1]
    for ov in candidates:
        try:
            compile_spec(parsed, ov)
            return ov
        except FractalcError:
            continue
    raise AssertionError(f"{spec}: no candidate input size compiles")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture
def one_torch_thread():
    """torch on one intra-op thread for the test (restored after): the machine's 2 cores are
    shared, and one thread is several times faster than contended ones here."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---- dependencies of `make test`: missing ones fail the run instead of skipping modules ----
# (module name for importlib, what provides it). The native runtime is built by
# `pip install -e ".[all]"`; Graphviz's `dot` binary stays optional (tests marked needs_dot).
REQUIRED = (
    ("torch", "torch==2.13.0"),
    ("safetensors", "safetensors (writes weights files)"),
    ("onnx", "onnx"),
    ("onnxruntime", "onnxruntime"),
    ("hypothesis", "hypothesis"),
    ("sklearn", "scikit-learn"),
    ("PIL", "pillow"),
    ("matplotlib", "matplotlib"),
    ("adjustText", "adjustText (the plot extra)"),
    ("graphviz", "graphviz (the Python package)"),
    ("fractalc.backends.xnor._xnor", "the native runtime (pip install -e \".[all]\" builds it)"),
)
OPT_OUT = "FRACTALC_TESTS_ALLOW_MISSING"  # =1: run what can run, ignore test files needing the rest


def _missing() -> list[tuple[str, str]]:
    import importlib.util
    out = []
    for mod, what in REQUIRED:
        try:
            found = importlib.util.find_spec(mod) is not None
        except Exception:  # noqa: BLE001  (a parent package that fails to import: missing too)
            found = False
        if not found:
            out.append((mod, what))
    return out


MISSING = _missing()
_IGNORED: list[str] = []


def pytest_configure(config):
    if MISSING and os.environ.get(OPT_OUT) != "1":
        raise pytest.UsageError(
            "dependencies of `make test` are missing: " + ", ".join(w for _, w in MISSING)
            + f". Install them (make setup), or set {OPT_OUT}=1 to run without the tests that need them.")


# what a test file imports that needs each dependency (module-level or inside a test)
_USES = {
    "torch": r"torch\b|fractalc\.backends\.torch|fractalc\.training",
    "onnx": r"onnx\b|fractalc\.backends\.(onnx|xnor)|fractalc\.runtime",
    "onnxruntime": r"onnxruntime\b|fractalc\.backends\.(onnx|xnor)|fractalc\.runtime",
    "fractalc.backends.xnor._xnor": r"fractalc\.backends\.xnor|fractalc\.runtime",
}


def _needs(text: str, mod: str) -> bool:
    import re
    pattern = _USES.get(mod, re.escape(mod) + r"\b")
    return re.search(rf"^\s*(import|from)\s+({pattern})", text, re.M) is not None


def pytest_ignore_collect(collection_path, config):
    if not MISSING or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    text = collection_path.read_text()
    if any(_needs(text, mod) for mod, _ in MISSING):
        _IGNORED.append(collection_path.name)
        return True
    return None


def pytest_terminal_summary(terminalreporter):
    if MISSING:
        terminalreporter.write_sep("!", f"{OPT_OUT}=1: missing " + ", ".join(w for _, w in MISSING), red=True)
        terminalreporter.write_line("test files not run: " + ", ".join(sorted(set(_IGNORED))), red=True)


@contextlib.contextmanager
def no_hang(seconds: int = 30):
    """A safety net turning a hang into a failure (not a timing assertion): the hostile-spec
    tests wrap work that must be refused quickly in it."""
    def boom(*_):
        raise TimeoutError(f"still running after {seconds} s: unbounded work")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_main(capsys, *args):
    """(exit status, stdout, stderr) of the real entry point `fractalc.cli.main`, errors included."""
    from fractalc.cli import main
    try:
        main(list(map(str, args)))
        rc = 0
    except SystemExit as exc:
        rc = exc.code or 0
    out, err = capsys.readouterr()
    return rc, out, err
