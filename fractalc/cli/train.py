"""`fractalc train` (torch is imported only when it runs)."""
from __future__ import annotations

import json

import click

from fractalc.cli.options import column_option, compile_from_options, spec_options


@click.command()
@spec_options
@click.option("--data", required=True, help="digits, a CIFAR pickle directory, or an image folder.")
@click.option("--config", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Training config (TOML); see fractalc/training/config.py for keys and defaults.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run directory (default runs/<network>).")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.pt exactly where it stopped.")
@click.option("--resume-from", type=click.Path(dir_okay=False), default=None, help="Continue from this checkpoint.")
@click.option("--epochs", type=int, default=None, help="Override every stage's epoch count.")
@click.option("--seed", type=int, default=None, help="Override the config's seed.")
@click.option("--stop-after", type=int, default=None,
              help="Stop after this many epochs in this run (as an interruption would; --resume continues).")
@click.option("--plot", is_flag=True, help="Write learning curves to OUT/curves.png after every epoch.")
@click.option("--no-export", is_flag=True, help="Skip the final onnx / onnx-xnor export.")
@click.option("--save-all-ranks", is_flag=True, help="Under torchrun, every rank writes its final weights.")
@click.option("--threads", type=click.IntRange(min=0), default=None,
              help="torch CPU threads while training (overrides the config's `threads`; 0: torch's own "
                   "setting, whose weights depend on the thread count).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@column_option
def train(spec, sets, network, max_nodes, data, config, out, resume, resume_from, epochs, seed,
          stop_after, plot, no_export, save_all_ranks, threads, quiet, column):
    """Train SPEC on DATA with the paper's recipes; checkpoints, metrics, curves and exports in OUT.

    Standard output carries one JSON object, the last epoch's metrics; progress bars and the
    per-epoch lines go to standard error. The final weights are OUT/model.safetensors."""
    from fractalc.training.loop import train as run

    over = {"seed": seed, "epochs": epochs, "threads": threads}
    # Compiled once, here: training gets this graph (--network, --max-nodes, --set, --column).
    c = compile_from_options(spec, sets, network, max_nodes).with_column(column)
    summary = run(c, data, out or f"runs/{c.name}", config=config, resume=resume,
                  resume_from=resume_from, stop_after=stop_after, plot=plot, export=not no_export,
                  save_all_ranks=save_all_ranks, progress=not quiet, config_overrides=over)
    click.echo(json.dumps(summary["final"], sort_keys=True))
