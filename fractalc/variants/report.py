"""Reports of a generated family: the table, CSV, and the Pareto plot (matplotlib, adjustText)."""
from __future__ import annotations

from pathlib import Path
from fractalc.variants.generate import COLUMNS, Generated, Variant


def table(gen: Generated) -> str:
    head = ["name", "depth", "param", "width", "Mbit", "FLOPs", "binary MACs", "budget"]
    rows = []
    for v in gen.variants:
        r = v.row()
        rows.append([r["name"], str(r["depth"]), r["param"], str(r["width"]), f"{r['mbit']:.2f}",
                     f"{r['flops']:.3e}", f"{100 * r['binary_mac_share']:.1f} %",
                     f"{r['metric']} of {v.point.baseline.stem}"])
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    right = {1, 3, 4, 5, 6}

    def fmt(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    for k, m in gen.baselines.items():
        lines.append(f"baseline {k}: {m.mbit:.2f} Mbit, {m.flops:.3e} FLOPs, depth {m.depth}")
    for n, p, reason in gen.skipped:
        lines.append(f"skipped {n} ({p}): {reason}")
    lines.append(f"{len(gen.variants)} variants written to {gen.out}, {len(gen.skipped)} skipped")
    return "\n".join(lines) + "\n"


def csv_text(gen: Generated) -> str:
    import csv
    import io
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for v in gen.variants:
        w.writerow(v.row())
    return buf.getvalue()


# Families that cost the same (F and RF, DF and DRF: residual adds are free) land on the same
# point: the first of each pair is drawn as a large hollow marker, the second as a small filled
# one inside it, so both stay visible.
_PLOT_STYLE = {
    "F": dict(marker="s", s=150, facecolors="none", edgecolors="tab:blue", linewidths=1.6),
    "RF": dict(marker="o", s=34, color="tab:orange"),
    "DF": dict(marker="^", s=190, facecolors="none", edgecolors="tab:green", linewidths=1.6),
    "DRF": dict(marker="D", s=30, color="tab:red"),
}


def _plot_label(vs: list[Variant]) -> str:
    """One label for the variants drawn on one point: "F/RF-c3d4 resnet21 (53)"."""
    fams = "/".join(dict.fromkeys(v.point.family for v in vs))
    rests = dict.fromkeys(v.name.split("_", 1)[1].replace("_", " ") for v in vs)
    values = "/".join(dict.fromkeys(str(v.result.value) for v in vs))
    return f"{fams}-{' = '.join(rests)} ({values})"


def plot(gen: Generated, path: str | Path) -> None:
    """Mbit against FLOPs for every variant, each baseline marked and its budget drawn as a line
    (vertical: parameter bits, horizontal: FLOPs); labels are moved apart by adjustText so none
    overlaps (matplotlib, deterministic, written atomically)."""
    import io

    from fractalc.fileio import atomic_write
    fig, _ax, _texts = pareto_figure(gen)  # BackendUnavailable without matplotlib / adjustText
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def pareto_figure(gen: Generated):
    """The figure of `plot`: (figure, axes, the variants' label texts)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from adjustText import adjust_text
    except ImportError:
        from fractalc.errors import BackendUnavailable
        raise BackendUnavailable("--plot needs matplotlib and adjustText: "
                                 "pip install 'matplotlib>=3.7' 'adjustText>=1.2'") from None
    fig, ax = plt.subplots(figsize=(10, 7.5), dpi=100)
    groups: dict[tuple[float, float], list[Variant]] = {}  # variants that cost the same
    for fam, style in _PLOT_STYLE.items():
        vs = [v for v in gen.variants if v.point.family == fam]
        if vs:
            ax.scatter([v.result.cost.mbit for v in vs], [v.result.cost.flops for v in vs],
                       label=fam, zorder=3, **style)
        for v in vs:
            groups.setdefault((v.result.cost.mbit, v.result.cost.flops), []).append(v)
    # each baseline: a star and its budget as a line, by the metric its variants were scaled to
    # (dashed vertical: parameter bits; dotted horizontal: FLOPs), named in the legend
    metrics: dict[str, set[str]] = {}
    for v in gen.variants:
        metrics.setdefault(f"{v.point.baseline.stem} ({v.point.dataset})", set()).add(v.point.metric)
    colours = ["black", "tab:purple", "tab:brown", "tab:olive", "tab:cyan", "tab:pink", "tab:gray"]
    for n, (k, m) in enumerate(gen.baselines.items()):
        c = colours[n % len(colours)]
        used = metrics.get(k, set())
        ax.scatter([m.mbit], [m.flops], marker="*", s=260, color=c, edgecolors="white", zorder=5,
                   label=f"{k}: {m.mbit:.2f} Mbit, {m.flops:.3g} FLOPs")
        if used & {"params", "both"}:
            ax.axvline(m.mbit, color=c, linestyle="--", linewidth=1, zorder=1)
        if used & {"flops", "both"}:
            ax.axhline(m.flops, color=c, linestyle=":", linewidth=1, zorder=1)
    ax.set_xlabel("parameters (Mbit); dashed line: a baseline's parameter budget")
    ax.set_ylabel("FLOPs (float mults + binary mults / 64); dotted line: a FLOPs budget")
    ax.set_title(f"{gen.space.name}: variants scaled to their budgets")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.15, y=0.1)
    if gen.variants or gen.baselines:
        ax.legend(title="family / baseline (star) and its budget", loc="upper center",
                  bbox_to_anchor=(0.5, -0.09), ncol=2, fontsize=8, title_fontsize=8, frameon=False)
    fig.tight_layout()
    texts, xs, ys = [], [], []
    for (x, y), vs in groups.items():
        texts.append(ax.text(x, y, _plot_label(vs), fontsize=7, zorder=4,
                             bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=0.5)))
        xs.append(x)
        ys.append(y)
    for m in gen.baselines.values():  # labels keep off the stars too
        xs.append(m.mbit)
        ys.append(m.flops)
    if texts:
        # every marker as a box of 24 x 24 pixels (data coordinates) for the labels to avoid;
        # a fixed number of iterations (adjustText's default is a time limit: not deterministic)
        from matplotlib.transforms import Bbox
        to_data = ax.transData.inverted()
        boxes = [Bbox(to_data.transform([(px - 12, py - 12), (px + 12, py + 12)]))
                 for px, py in ax.transData.transform(list(zip(xs, ys)))]
        adjust_text(texts, x=xs, y=ys, objects=boxes, ax=ax, expand=(1.1, 1.3),
                    ensure_inside_axes=True, iter_lim=500, time_lim=None,
                    arrowprops=dict(arrowstyle="-", color="0.5", linewidth=0.5))
    return fig, ax, texts
