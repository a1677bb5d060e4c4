"""`fractalc run`: an onnx-xnor model on a .npy input with the native runtime."""
from __future__ import annotations

import click

from fractalc.errors import FractalcError


MAX_INPUT_BYTES = 4 << 30


def _load_npy(path: str):
    import io

    import numpy as np

    from fractalc.fileio import FileRefused, read_limited
    try:  # a regular file only: a FIFO or a device would block or never end
        raw = read_limited(path, MAX_INPUT_BYTES)
    except FileRefused as exc:
        if exc.reason == "no such file":
            raise FractalcError(f"input file {path!r} does not exist") from None
        raise FractalcError(f"cannot read input file {path!r}: {exc.reason}") from None
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise FractalcError(f"input file {path!r} is not a .npy array: {exc}") from None




@click.command("run")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False),
              help="A .npy float32 array (N, C, H, W).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output .npy file.")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="Kernel threads (default: all CPUs, or $FRACTALC_THREADS).")
@click.option("--isa", type=click.Choice(["portable", "avx2", "avx512", "neon"]), default=None,
              help="Force a kernel path (default: $FRACTALC_ISA or the best this CPU runs).")
def run_cmd(model, input_path, output, threads, isa):
    """Run an onnx-xnor MODEL on a .npy input with the native XNOR runtime."""
    import io

    import numpy as np

    from fractalc.fileio import atomic_write
    from fractalc.runtime import Session
    x = _load_npy(input_path)
    sess = Session(model, threads=threads, isa=isa)
    y = sess.run(x)
    buf = io.BytesIO()
    np.save(buf, y, allow_pickle=False)
    atomic_write(output, buf.getvalue())
    click.echo(f"wrote {output}: {y.dtype} {tuple(y.shape)}", err=True)
