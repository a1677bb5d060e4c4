"""The README's shell examples run: every command block (fenced ```sh / ```bash / ```console
blocks and 4-space indented blocks) is read, each `fractalc ...` command in it (also written
`.venv/bin/fractalc`, `$ fractalc`, `python -m fractalc`) is run in a temporary folder holding
links to specs/ and examples/, in README order, and must exit 0, or 1 when its trailing
comment says `# error` (a documented failure).

Nothing is skipped silently: a command that cannot run in the suite matches an entry of `SKIP`
(with the reason), a long one an entry of `ADJUST` (the arguments added and why), one that
needs an input file an entry of `PREPARE`; a line of another program matches `OTHER` by its
first word, with the reason it is not run here. A README line that matches none fails the
test, so a new example is either run or listed here with its reason. Examples added to the
README are picked up with no change to this file."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT

README = ROOT / "README.md"

#: command prefix -> why it is not run in the suite.
SKIP = {
    "fractalc bench ": "a benchmark: minutes of timed runs on 224x224 models (tests/test_engine_* cover the engine)",
    "fractalc train specs/rf_c3d4_resnet21.fr --set dataset=cifar10 --data ~/cifar-10-batches-py":
        "needs the CIFAR-10 download (no network in the suite); tests/test_train.py trains on digits",
    "fractalc train ... ": "an elided command line (`...`), not a runnable one",
    "fractalc fmt specs/my_spec.fr": "a placeholder file name; tests/test_fmt.py rewrites real files",
}
#: command prefix -> (arguments appended, why).
ADJUST = {
    "fractalc train examples/rf_digits.fr ": (
        ["--epochs", "1"], "the demo trains 2 x 5 epochs (~40 s); one epoch per stage here, so the "
                           "eval after it has weights to read (tests/test_digits_determinism.py "
                           "checks the demo's determinism)"),
}
#: command prefix -> (file made in the folder first, what it stands for).
PREPARE = {
    "fractalc run rf.onnx --input x.npy": ("x.npy", "an input batch for rf.onnx (1 x 64 x 8 x 8)"),
    "fractalc compile specs/rf_c4d8_resnet37.fr --target torch-state --column 1 --weights full.pt":
        ("full.pt", "a full network's weights (made with --target torch-state)"),
}
#: first word of a line that is not a fractalc command -> why it is not run here.
OTHER = {
    "make": "installs the venv and runs the whole suite (make demo / make test): the suite itself",
    "torchrun": "DistributedDataParallel on 2 ranks: tests/test_train.py::test_torchrun_two_ranks_stay_in_sync",
    "python": "a module of the package run directly (the engine writer): tests/test_engine_* run it",
    ".venv/bin/python": "a script or module of the tree (benchmarks, mutation check, engine writer), "
                        "each tested by its own test file or a benchmark",
    "fractalc-run": "the engine's C program: tests/test_engine_capi.py runs it",
    "cc": "compiles the C example: tests/test_engine_capi.py builds and runs it",
    "backends/xnor/tools/cross_aarch64.sh": "the AArch64 cross build: tests/test_aarch64.py",
    "aarch64-linux-gnu-gcc": "links the C example for AArch64: tests/test_aarch64.py",
    "qemu-aarch64": "runs the cross-built engine under qemu: tests/test_aarch64.py",
    "for": "a shell loop redrawing the README's images into docs/images (its render commands are "
           "the ones run above)",
}

_FRACTALC = re.compile(r"^(?:\$\s+)?(?:\.venv/bin/|python3? -m )?fractalc(?=\s|$)")


@dataclass
class Block:
    line: int
    commands: list[tuple[int, str]]  # (README line, logical command line)


def _logical(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Join `\\`-continued lines; drop blank and comment-only lines."""
    out, cur, start = [], "", 0
    for n, raw in lines:
        text = raw.strip()
        if not cur and (not text or text.startswith("#")):
            continue
        if not cur:
            start = n
        if text.endswith("\\"):
            cur += text[:-1] + " "
            continue
        out.append((start, cur + text))
        cur = ""
    if cur:
        out.append((start, cur))
    return out


def blocks(text: str) -> list[Block]:
    """The README's shell blocks: fenced sh/bash/console/shell and 4-space indented ones."""
    found, lines = [], text.split("\n")
    fence, body, prev_blank, indented = None, [], True, []
    for n, line in enumerate(lines, 1):
        if fence is not None:
            if line.startswith("```"):
                if fence in ("sh", "bash", "console", "shell"):
                    found.append(Block(body[0][0] if body else n, _logical(body)))
                fence, body = None, []
            else:
                body.append((n, line))
            continue
        if line.startswith("```"):
            fence, body = line[3:].strip(), []
            continue
        if line.startswith("    ") and (prev_blank or indented):
            if line.strip():
                indented.append((n, line))
            continue
        if indented:
            found.append(Block(indented[0][0], _logical(indented)))
            indented = []
        prev_blank = not line.strip()
    return [b for b in found if b.commands]


def _match(table: dict, command: str):
    for prefix, value in table.items():
        if command.startswith(prefix):
            return value
    return None


def _normal(command: str) -> str:
    """`.venv/bin/fractalc X`, `$ fractalc X`, `python -m fractalc X` -> `fractalc X`."""
    return _FRACTALC.sub("fractalc", command, count=1)


def plan(block: Block) -> list[tuple[int, str, str]]:
    """(line, command, what to do: "run" | "error" | "skip: why") for each line of a block."""
    out = []
    first = block.commands[0][1].split()[0] if block.commands else ""
    if first == "for":
        return [(n, c, f"skip: {OTHER['for']}") for n, c in block.commands]
    for n, command in block.commands:
        if not _FRACTALC.match(command):
            word = command.split()[0]
            why = OTHER.get(word)
            out.append((n, command, f"skip: {why}" if why else "unknown"))
            continue
        c = _normal(command)
        why = _match(SKIP, c)
        if why:
            out.append((n, c, f"skip: {why}"))
            continue
        comment = c.split("  #", 1)[1].strip() if "  #" in c else ""
        out.append((n, c, "error" if comment.startswith("error") else "run"))
    return out


BLOCKS = blocks(README.read_text())


def test_the_readme_has_commands_and_every_line_is_accounted_for():
    plans = [p for b in BLOCKS for p in plan(b)]
    assert sum(1 for *_, what in plans if what in ("run", "error")) >= 30
    unknown = [f"README.md:{n}: {c}" for n, c, what in plans if what == "unknown"]
    assert not unknown, ("README lines that are neither fractalc commands nor listed in OTHER "
                         "(add the program with the reason it is not run): " + "; ".join(unknown))
    # every table entry is still used: a stale one would hide nothing but mislead
    commands = [_normal(c) for b in BLOCKS for _, c in b.commands]
    for table in (SKIP, ADJUST, PREPARE):
        stale = [p for p in table if not any(c.startswith(p) for c in commands)]
        assert not stale, f"entries matching no README command: {stale}"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    # specs/ and examples/ are links to the tree's own (read only by the examples run here:
    # the ones that would write into them are in SKIP): a copy of specs/lib would not be the
    # bundled library that examples/ imports through ../specs/lib (see the Trust model)
    work = tmp_path_factory.mktemp("readme")
    for d in ("specs", "examples"):
        (work / d).symlink_to(ROOT / d, target_is_directory=True)
    (work / "tmp").mkdir()
    return work


def _prepare(name: str, work: Path) -> None:
    import numpy as np
    if name == "x.npy":
        np.save(work / "x.npy", np.random.default_rng(0).standard_normal((1, 64, 8, 8)).astype(np.float32))
    elif name == "full.pt":
        subprocess.run([sys.executable, "-m", "fractalc", "compile", "specs/rf_c4d8_resnet37.fr",
                        "--target", "torch-state", "--seed", "1", "-o", "full.pt"], cwd=work, check=True,
                       capture_output=True)
    else:
        raise AssertionError(f"no recipe for {name}")


def _argv(command: str) -> list[str]:
    argv = shlex.split(command, comments=True)
    argv = [os.path.expanduser(a) for a in argv]
    # outputs the README sends to /tmp stay in the test's folder
    return [a.replace("/tmp/", "tmp/", 1) if a.startswith("/tmp/") else a for a in argv]


# The blocks with something to run (a block of only listed exceptions, e.g. the AArch64 cross
# build, is accounted for by the test above and not collected here, rather than skipped).
RUNNABLE = [b for b in BLOCKS if any(what in ("run", "error") for *_, what in plan(b))]


@pytest.mark.parametrize("block", RUNNABLE, ids=[f"README.md:{b.line}" for b in RUNNABLE])
def test_readme_block_runs(block, workspace):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FRACTALC_THREADS": "1"}
    ran = 0
    for n, command, what in plan(block):
        if what.startswith("skip") or what == "unknown":  # listed with the reason (or failed above)
            continue
        argv = _argv(command)
        assert argv[0] == "fractalc"
        if argv[1:2] and argv[1] == "render" and any(a.endswith((".svg", ".png", ".pdf")) for a in argv) \
                and shutil.which("dot") is None:
            continue  # needs Graphviz's dot (optional, like the needs_dot tests); DOT output still runs
        prep = _match(PREPARE, command)
        if prep and not (workspace / prep[0]).exists():
            _prepare(prep[0], workspace)
        extra = _match(ADJUST, command)
        argv = [sys.executable, "-m", "fractalc", *argv[1:], *(extra[0] if extra else [])]
        r = subprocess.run(argv, cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
        want = 1 if what == "error" else 0
        assert r.returncode == want, (f"README.md:{n}: `{command}` exited {r.returncode} "
                                      f"(expected {want})\n{r.stderr[-2000:]}")
        if want:
            assert "Traceback" not in r.stderr and r.stderr.startswith("error:"), r.stderr
        ran += 1
    if not ran:
        reasons = sorted({what for _, _, what in plan(block)})
        pytest.skip(f"nothing to run in this block: {'; '.join(reasons)}")
