"""Training configuration: a TOML file over documented defaults, and the paper's recipes.

Recipes (reference doc, section 1):
- ``two-stage`` (ResNet variants): stage 1 trains full-precision weights with tanh on the
  binary convs' inputs (mode ``tanh``), stage 2 fine-tunes the binary network (mode ``binary``)
  with Adam from stage 1's weights;
- ``binary-scratch`` (DenseNet variants): binary from the start, Adam, cosine schedule, Glorot
  (Xavier-uniform) initialisation;
- ``auto`` (default) picks binary-scratch for specs with dense connectivity (Concat nodes) and
  two-stage otherwise.

Example ``train.toml`` (every key optional)::

    recipe = "two-stage"
    seed = 0
    batch_size = 64
    eval_batch_size = 256
    drop_path = 0.0            # local drop-path probability for joins (0 = off)
    max_steps_per_epoch = 0    # cap on optimizer steps per epoch (0 = whole training set)
    threads = 0                # torch CPU threads while training (0 = torch's own setting)
    [[stages]]                  # overrides stage 1 of the recipe, key by key
    epochs = 4
    lr = 0.002
    [[stages]]
    epochs = 4
"""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from ..errors import FractalcError

RECIPES = ("auto", "two-stage", "binary-scratch")
MODES = ("fp", "tanh", "binary")


@dataclass(frozen=True)
class Stage:
    mode: str = "binary"
    epochs: int = 5
    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    schedule: str = "cosine"  # cosine | constant


@dataclass(frozen=True)
class TrainConfig:
    recipe: str = "auto"
    seed: int = 0
    batch_size: int = 64
    eval_batch_size: int = 256
    init: str = "default"  # default | glorot
    drop_path: float = 0.0
    max_steps_per_epoch: int = 0  # 0 = the whole training set each epoch
    # torch intra-op threads while training and evaluating (restored after). 0 keeps torch's
    # own setting, which is faster on many cores, but the weights then depend on the thread
    # count: torch's CPU conv and linear weight gradients sum their batch in per-thread
    # partial sums (forward passes do not). A fixed count (the digits demo uses 1) gives the
    # same weights on any machine and under any OMP_NUM_THREADS.
    threads: int = 0
    stages: tuple[Stage, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stages"] = [asdict(s) for s in self.stages]
        return d


def recipe_stages(recipe: str) -> tuple[Stage, ...]:
    if recipe == "two-stage":
        return (Stage(mode="tanh", epochs=5, lr=1e-3), Stage(mode="binary", epochs=5, lr=5e-4))
    return (Stage(mode="binary", epochs=10, lr=2e-3),)


def _check(d: dict, cls, where: str) -> dict:
    names = {f.name for f in fields(cls)}
    for k in d:
        if k not in names:
            raise FractalcError(f"{where}: unknown key {k!r}; known: {', '.join(sorted(names))}")
    return d


MAX_CONFIG_BYTES = 1 << 20  # a config is a few hundred bytes; never read a device or a huge file


def load_config(path: str | Path | None, *, has_dense: bool, overrides: dict | None = None) -> TrainConfig:
    """Read a TOML config (or none) and resolve the recipe into concrete stages."""
    raw: dict = {}
    if path is not None:
        from ..fileio import FileRefused, read_limited
        try:
            raw = tomllib.loads(read_limited(path, MAX_CONFIG_BYTES).decode())
        except FileRefused as exc:
            raise FractalcError(f"cannot read training config {str(path)!r}: {exc.reason}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise FractalcError(f"cannot read training config {path}: {exc}") from None
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    all_epochs = overrides.pop("epochs", None)  # --epochs: every stage
    raw.update(overrides)
    stage_over = raw.pop("stages", [])
    _check(raw, TrainConfig, str(path or "config"))
    cfg = TrainConfig(**raw)
    if cfg.recipe not in RECIPES:
        raise FractalcError(f"recipe must be one of {', '.join(RECIPES)}, got {cfg.recipe!r}")
    recipe = cfg.recipe if cfg.recipe != "auto" else ("binary-scratch" if has_dense else "two-stage")
    stages = list(recipe_stages(recipe))
    if not isinstance(stage_over, list):
        raise FractalcError("stages must be an array of tables ([[stages]])")
    for i, over in enumerate(stage_over):
        _check(over, Stage, f"stages[{i}]")
        if i < len(stages):
            stages[i] = replace(stages[i], **over)
        else:
            stages.append(Stage(**over))
    if all_epochs is not None:
        stages = [replace(s, epochs=int(all_epochs)) for s in stages]
    for i, s in enumerate(stages):
        if s.mode not in MODES:
            raise FractalcError(f"stages[{i}].mode must be one of {', '.join(MODES)}, got {s.mode!r}")
        if s.optimizer not in ("adam", "sgd") or s.schedule not in ("cosine", "constant"):
            raise FractalcError(f"stages[{i}]: optimizer adam|sgd and schedule cosine|constant")
        if s.epochs < 0 or s.lr <= 0:
            raise FractalcError(f"stages[{i}]: epochs must be >= 0 and lr > 0")
    init = cfg.init if cfg.init != "default" or recipe != "binary-scratch" else "glorot"
    if not isinstance(cfg.threads, int) or cfg.threads < 0:
        raise FractalcError(f"threads must be an integer >= 0 (0: torch's own setting), got {cfg.threads!r}")
    if cfg.batch_size <= 0 or not 0 <= cfg.drop_path < 1:
        raise FractalcError("batch_size must be positive and drop_path in [0, 1)")
    return replace(cfg, recipe=recipe, init=init, stages=tuple(stages))
