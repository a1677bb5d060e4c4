"""The training loop: recipes in stages, per-epoch checkpoints, exact resume, DDP under torchrun.

Determinism: the model is initialised from the config's seed; each epoch's shuffle and
augmentation come from a generator seeded by (seed, epoch); the torch RNG state (dropout,
drop-path) is saved in every checkpoint. A run resumed from the checkpoint of epoch k therefore
ends with the same weights as an uninterrupted run.

Distributed: under ``torchrun`` (WORLD_SIZE > 1) the process group is initialised (gloo on CPU,
nccl on GPU), the model is wrapped in DistributedDataParallel, every rank trains on its shard
of each epoch's permutation with batch_size / world_size samples per step, and only rank 0
evaluates, logs and writes files.
"""
from __future__ import annotations

import io
import json
import math
import os
import sys
import time
from pathlib import Path

import click
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ir
from ..errors import FractalcError
from ..fileio import atomic_write
from . import checkpoint
from .config import TrainConfig, load_config
from .data import Dataset, augment_batch, load_data


#: The final weights in the run directory (safetensors with provenance; see fractalc.weights_file).
WEIGHTS = "model.safetensors"


def build_model(compiled, seed: int, drop_path: float = 0.0) -> nn.Module:
    from ..backends.torch import from_graph
    if drop_path:
        return from_graph(compiled.graph, seed=seed, drop_path=True, drop_prob=drop_path)
    return from_graph(compiled.graph, seed=seed)


def glorot_(model: nn.Module, seed: int) -> None:
    """Xavier-uniform on every conv/linear weight, in state_dict order (deterministic)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() >= 2:
                fan_in = p.shape[1] * math.prod(p.shape[2:])
                fan_out = p.shape[0] * math.prod(p.shape[2:])
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                p.copy_(torch.rand(p.shape, generator=gen) * 2 * bound - bound)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> dict:
    """Loss, top-1 and top-5 (top-k with k = min(5, classes)) in eval mode, the binary layers
    as deployed and the float layers in torch's own order (``deployed_arithmetic="binary"``:
    the engine's exact float arithmetic, emulated op by op, would make validation many times
    slower; its outputs are within rounding of these)."""
    model.eval()
    net = getattr(model, "module", model)  # under DistributedDataParallel
    saved = getattr(net, "deployed_arithmetic", None)
    if saved is True:
        net.deployed_arithmetic = "binary"
    total, loss, c1, c5 = 0, 0.0, 0, 0
    try:
        with torch.no_grad():
            for i in range(0, len(y), batch):
                logits = model(x[i:i + batch])
                t = y[i:i + batch]
                loss += F.cross_entropy(logits, t, reduction="sum").item()
                k = min(5, logits.shape[1])
                top = logits.topk(k, dim=1).indices
                c1 += (top[:, 0] == t).sum().item()
                c5 += (top == t[:, None]).any(dim=1).sum().item()
                total += len(t)
    finally:
        if saved is True:
            net.deployed_arithmetic = saved
    return {"loss": loss / total, "top1": c1 / total, "top5": c5 / total}


def _dist():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def _optimizer(stage, params):
    if stage.optimizer == "sgd":
        return torch.optim.SGD(params, lr=stage.lr, momentum=stage.momentum, weight_decay=stage.weight_decay)
    return torch.optim.Adam(params, lr=stage.lr, weight_decay=stage.weight_decay)


def _scheduler(stage, opt):
    if stage.schedule == "cosine" and stage.epochs > 0:
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=stage.epochs)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)


def _write_metrics(out: Path, history: list[dict]) -> None:
    atomic_write(out / "metrics.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in history))


def train(spec, data: str, out: str | Path, *, config: str | None = None,
          sets: dict | None = None, resume: bool = False, resume_from: str | None = None,
          stop_after: int | None = None, plot: bool = False, export: bool = True,
          save_all_ranks: bool = False, progress: bool = True, config_overrides: dict | None = None) -> dict:
    """Train `spec` on `data` into directory `out`; returns the summary written to summary.json.

    `spec` is a `Compiled` (what the CLI passes: its --network, --max-nodes, --set and
    --column are already applied, and nothing is compiled again) or a spec path, compiled here
    once with the overrides `sets` (which a `Compiled` already carries, so they must be None)."""
    from ..compiler import Compiled, compile_spec

    if isinstance(spec, Compiled):
        if sets:
            raise TypeError("train: `sets` apply to a spec path; this spec is compiled already")
        compiled = spec
    else:
        compiled = compile_spec(spec, sets)
    g = compiled.graph
    cfg: TrainConfig = load_config(config, has_dense=g.count(ir.Concat) > 0, overrides=config_overrides)
    rank, world = _dist()
    out = Path(out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    ds: Dataset = load_data(data, tuple(g.shape(g.input_id)))
    n_out = g.shape(g.output_id)
    if len(n_out) != 1 or n_out[0] < ds.classes:
        raise FractalcError(f"the network's output {n_out} cannot classify {ds.classes} classes; "
                            "set the spec's classes (e.g. --set dataset=cifar10)")
    threads = torch.get_num_threads()
    if cfg.threads:  # a fixed count: the same weights whatever the machine (see config.threads)
        torch.set_num_threads(cfg.threads)
    try:
        return _train(compiled, cfg, ds, out, rank, world, resume=resume, resume_from=resume_from,
                      stop_after=stop_after, plot=plot, export=export, save_all_ranks=save_all_ranks,
                      progress=progress)
    finally:
        torch.set_num_threads(threads)


def _train(compiled, cfg, ds, out, rank, world, *, resume, resume_from, stop_after, plot, export,
           save_all_ranks, progress):
    torch.manual_seed(cfg.seed)
    model = build_model(compiled, cfg.seed, cfg.drop_path)
    if cfg.init == "glorot":
        glorot_(model, cfg.seed)

    start_stage, start_epoch, history = 0, 0, []
    ckpt = None
    ckpt_path = Path(resume_from) if resume_from else out / "checkpoint.pt"
    if resume or resume_from:
        ckpt = checkpoint.load(ckpt_path, compiled.spec.sha256)
        if {"threads": 0, **ckpt["config"]} != cfg.to_dict():  # (checkpoints before `threads`)
            raise FractalcError(f"{ckpt_path} was trained with another config; resume with the same one")
        model.load_state_dict(ckpt["model"])
        start_stage, start_epoch, history = ckpt["stage"], ckpt["epoch"], list(ckpt["history"])
        if start_epoch >= cfg.stages[start_stage].epochs:  # that stage was complete
            start_stage, start_epoch = start_stage + 1, 0

    net = model
    if world > 1:
        import warnings
        # 1x1 conv weights get gradients with equivalent but different strides on size-1
        # dims; DDP's bucket check warns about it on every step although nothing is wrong.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        net = nn.parallel.DistributedDataParallel(model)
    epochs_run = 0
    t0 = time.time()
    per_rank = max(1, cfg.batch_size // world)
    for si in range(start_stage, len(cfg.stages)):
        stage = cfg.stages[si]
        model.set_mode(stage.mode)
        opt = _optimizer(stage, model.parameters())
        sched = _scheduler(stage, opt)
        first = si == start_stage and ckpt is not None and start_epoch > 0
        if first:
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            torch.set_rng_state(ckpt["rng"])
        for ep in range(start_epoch if si == start_stage else 0, stage.epochs):
            global_epoch = sum(s.epochs for s in cfg.stages[:si]) + ep
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + global_epoch)
            perm = torch.randperm(len(ds.train_y), generator=gen)
            steps = math.ceil(len(perm) / (per_rank * world))
            if cfg.max_steps_per_epoch:
                steps = min(steps, cfg.max_steps_per_epoch)
            need = steps * per_rank * world
            perm = torch.cat([perm, perm[: max(0, need - len(perm))]])[:need]  # equal shards
            mine = perm[rank::world]
            net.train()
            lr = opt.param_groups[0]["lr"]
            seen, loss_sum, correct = 0, 0.0, 0
            # stderr: standard output carries the command's JSON result alone (off a terminal
            # click prints the label as a line; on one, the bar)
            bar = click.progressbar(range(steps), label=f"stage {si + 1} ({stage.mode}) epoch {ep + 1}/{stage.epochs}",
                                    file=sys.stderr if (progress and rank == 0) else io.StringIO())
            with bar:
                for step in bar:
                    idx = mine[step * per_rank:(step + 1) * per_rank]
                    xb, yb = ds.train_x[idx], ds.train_y[idx]
                    if ds.augment:
                        xb = augment_batch(xb, gen)
                    logits = net(xb)
                    loss = F.cross_entropy(logits, yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    seen += len(yb)
                    loss_sum += loss.item() * len(yb)
                    correct += (logits.argmax(1) == yb).sum().item()
            sched.step()
            if world > 1:
                # DDP broadcasts BN buffers at the start of each forward, so after the last step
                # every rank holds running statistics of its own batch: take rank 0's.
                import torch.distributed as dist
                for b in model.buffers():
                    dist.broadcast(b, 0)
            row = None
            if rank == 0:
                ev = evaluate(model, ds.test_x, ds.test_y, cfg.eval_batch_size)
                row = {"epoch": global_epoch + 1, "stage": si + 1, "mode": stage.mode, "lr": lr,
                       "loss": loss_sum / seen, "train_top1": correct / seen, "test_loss": ev["loss"],
                       "top1": ev["top1"], "top5": ev["top5"], "time": round(time.time() - t0, 3)}
                history.append(row)
                checkpoint.save(out / "checkpoint.pt", {
                    "spec_sha256": compiled.spec.sha256, "overrides": compiled.overrides,
                    "config": cfg.to_dict(), "stage": si, "epoch": ep + 1, "model": model.state_dict(),
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "rng": torch.get_rng_state(), "history": history, "mode": stage.mode})
                _write_metrics(out, history)
                if plot:
                    from .plot import plot_history
                    plot_history(history, out / "curves.png")
                click.echo(f"epoch {row['epoch']}: loss {row['loss']:.4f}  test top-1 {100 * row['top1']:.2f} %"
                           f"  top-5 {100 * row['top5']:.2f} %  ({row['time']:.1f} s)", err=True)
            epochs_run += 1
            if stop_after is not None and epochs_run >= stop_after:
                return _finish(out, rank, world, model, compiled, cfg, history, export=False,
                               stopped=True, save_all_ranks=save_all_ranks)
        start_epoch = 0
    return _finish(out, rank, world, model, compiled, cfg, history, export=export, stopped=False,
                   save_all_ranks=save_all_ranks)


def _finish(out, rank, world, model, compiled, cfg, history, *, export, stopped, save_all_ranks):
    if world > 1:
        import torch.distributed as dist
        flat = torch.cat([p.detach().double().flatten() for p in model.state_dict().values()
                          if p.is_floating_point()])
        check = torch.stack([flat.sum(), (flat * flat).sum()])
        lo, hi = check.clone(), check.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        if not torch.equal(lo, hi):
            raise FractalcError("ranks diverged: their weights differ after training")
        if save_all_ranks:
            checkpoint.save_weights(out / f"weights.rank{rank}.safetensors", model, compiled,
                                    mode=cfg.stages[-1].mode if cfg.stages else "binary", rank=rank)
    summary = {"spec": compiled.spec.main, "network": compiled.name, "overrides": compiled.overrides,
               "column": compiled.column,
               "config": cfg.to_dict(), "epochs": len(history), "stopped_early": stopped,
               "final": history[-1] if history else None, "world_size": world,
               "mode": cfg.stages[-1].mode if cfg.stages else None, "exports": {}}
    if rank == 0:
        # safetensors with provenance (spec, overrides, network, column, parameters), atomic
        checkpoint.save_weights(out / WEIGHTS, model, compiled,
                                mode=cfg.stages[-1].mode if cfg.stages else "binary")
        summary["weights"] = WEIGHTS
        if export:
            summary["exports"] = _export(compiled, out, out / WEIGHTS)
        atomic_write(out / "summary.json", json.dumps(summary, indent=1, sort_keys=True) + "\n")
    if world > 1:
        import torch.distributed as dist
        dist.barrier()
    return summary


def _export(compiled, out: Path, weights: Path) -> dict[str, str]:
    """Write the trained model as model.onnx and model.xnor.onnx (the graph trained, with the
    weights just saved), straight through the ONNX backend; {flavour: file name} of those
    written. Without the onnx package nothing is exported (the weights are kept) and a note
    says so, rather than failing a finished training run."""
    try:
        from ..backends.onnx.emit import build
    except ImportError as exc:
        click.echo(f"not exporting ONNX: {exc.name} is not installed (pip install 'fractalc[onnx]')", err=True)
        return {}
    # column: the graph trained may be one fractal column (train --column); it is applied.
    options = {"weights": str(weights), "seed": None, "column": compiled.column}
    written = {}
    for flavour, name in (("onnx", "model.onnx"), ("onnx-xnor", "model.xnor.onnx")):
        proto = build(compiled, options, flavour)
        atomic_write(out / name, proto.SerializeToString(deterministic=True))
        written[flavour] = name
    return written
