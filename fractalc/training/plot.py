"""Learning curves (PNG) from the metrics history, written atomically."""
from __future__ import annotations

import io
from pathlib import Path

from ..fileio import atomic_write


def plot_history(history: list[dict], path: str | Path, title: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.plot(ep, [r["loss"] for r in history], "o-", label="train loss")
    a.plot(ep, [r["test_loss"] for r in history], "s-", label="test loss")
    a.set_xlabel("epoch")
    a.legend()
    b.plot(ep, [100 * r["train_top1"] for r in history], "o-", label="train top-1")
    b.plot(ep, [100 * r["top1"] for r in history], "s-", label="test top-1")
    b.set_xlabel("epoch")
    b.set_ylabel("%")
    b.legend()
    stages = sorted({(r["stage"], r["mode"]) for r in history})
    for s, mode in stages[1:]:
        x0 = min(r["epoch"] for r in history if r["stage"] == s) - 0.5
        for ax in (a, b):
            ax.axvline(x0, color="gray", ls="--", lw=0.8)
    fig.suptitle(title or " -> ".join(m for _, m in stages))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    atomic_write(path, buf.getvalue())
