"""`fractalc compare`: two specs' (or models') costs side by side, with ratios and per-stage bars.

The numbers are the cost model's (fractalc.cost, as `fractalc stats`); a ratio is B / A (None
where A's value is 0). A stage is a top-level id scope of the IR: node ``stage2.block1.conv1``
belongs to stage ``stage2``.
"""
from __future__ import annotations

import json

import click

from fractalc.cli.options import allow_import_option, parse_sets, resolve_spec_argument
from fractalc.errors import FractalcError

#: (key, label) of the compared totals, in the order shown.
METRICS = (
    ("bits", "bits"),
    ("mbit", "Mbit"),
    ("float_params", "float params"),
    ("binary_params", "binary params"),
    ("flops", "FLOPs"),
    ("float_macs", "float MACs"),
    ("binary_macs", "binary MACs"),
    ("depth", "depth"),
)

PLOT_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
#: Fixed metadata, so that one input draws the same bytes every time.
_PLOT_METADATA = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}


def stage_of(node_id: str) -> str:
    """The top-level id scope of an IR node: ``stage2.block1.conv1`` -> ``stage2``."""
    return node_id.split(".", 1)[0]


def totals(co) -> dict:
    """The compared totals of a `fractalc.cost.Cost`."""
    return {"bits": co.bits, "mbit": co.bits / 1e6, "float_params": co.total("float_params"),
            "binary_params": co.total("binary_params"), "flops": co.flops,
            "float_macs": co.total("float_mults"), "binary_macs": co.total("binary_mults"),
            "depth": co.depth}


def stages(co) -> dict[str, dict]:
    """Stage -> {"bits", "flops"}, in graph order, for the stages that cost something."""
    out: dict[str, dict] = {}
    for l in co.layers:
        s = out.setdefault(stage_of(l.id), {"bits": 0, "flops": 0.0})
        s["bits"] += l.bits
        s["flops"] += l.flops
    return {k: v for k, v in out.items() if v["bits"] or v["flops"]}


def ratio(a, b):
    return b / a if a else None


def comparison(ca, cb) -> dict:
    """The document of `fractalc compare --json` for two `Compiled` specs."""
    from fractalc.cost import cost

    side = {}
    per_stage = {}
    for key, c in (("a", ca), ("b", cb)):
        co = cost(c.graph)
        side[key] = {"network": c.name, "spec": c.spec.main, "spec_sha256": c.spec.sha256,
                     "overrides": c.overrides, **totals(co)}
        per_stage[key] = stages(co)
    names = list(dict.fromkeys([*per_stage["a"], *per_stage["b"]]))
    zero = {"bits": 0, "flops": 0.0}
    return {
        "a": side["a"], "b": side["b"],
        "ratio": {k: ratio(side["a"][k], side["b"][k]) for k, _ in METRICS if k != "mbit"},
        "stages": [{"stage": s, "a": per_stage["a"].get(s, zero), "b": per_stage["b"].get(s, zero)}
                   for s in names],
    }


def label(side: dict) -> str:
    sets = ", ".join(f"{k}={v}" for k, v in sorted(side["overrides"].items()))
    return side["network"] + (f" ({sets})" if sets else "")


def _num(key: str, v) -> str:
    if key == "mbit":
        return f"{v:,.3f}"
    if key == "flops":
        return f"{v:.4e}"
    return f"{v:,}"


def text(doc: dict) -> str:
    a, b = doc["a"], doc["b"]
    la, lb = "A: " + label(a), "B: " + label(b)
    wa = max(len(la), 16)
    wb = max(len(lb), 16)
    lines = [f"A = {a['spec']}", f"B = {b['spec']}", "",
             f"{'':<14} {la:>{wa}} {lb:>{wb}} {'B / A':>9}"]
    for key, name in METRICS:
        r = doc["ratio"].get(key, ratio(a[key], b[key]))
        lines.append(f"{name:<14} {_num(key, a[key]):>{wa}} {_num(key, b[key]):>{wb}} "
                     f"{'-' if r is None else f'{r:.4f}':>9}")
    if doc["stages"]:
        w = max([len(s["stage"]) for s in doc["stages"]] + [5])
        lines += ["", f"{'stage':<{w}} {'A Mbit':>10} {'B Mbit':>10} {'B / A':>8} "
                      f"{'A FLOPs':>11} {'B FLOPs':>11} {'B / A':>8}"]
        for s in doc["stages"]:
            rb = ratio(s["a"]["bits"], s["b"]["bits"])
            rf = ratio(s["a"]["flops"], s["b"]["flops"])
            lines.append(f"{s['stage']:<{w}} {s['a']['bits'] / 1e6:>10.3f} {s['b']['bits'] / 1e6:>10.3f} "
                         f"{'-' if rb is None else f'{rb:.3f}':>8} {s['a']['flops']:>11.4e} "
                         f"{s['b']['flops']:>11.4e} {'-' if rf is None else f'{rf:.3f}':>8}")
    return "\n".join(lines) + "\n"


def plot_format(path: str) -> str:
    from pathlib import Path
    fmt = PLOT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise FractalcError(f"--plot {path!r}: the extension picks the format: "
                            + ", ".join(PLOT_FORMATS))
    return fmt


def plot(doc: dict, path: str) -> None:
    """Per-stage bars (Mbit and FLOPs) of A and B, written atomically (PNG, SVG or PDF by the
    extension; matplotlib, imported here)."""
    import io

    from fractalc.fileio import atomic_write
    fmt = plot_format(path)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from fractalc.errors import BackendUnavailable
        raise BackendUnavailable("--plot needs matplotlib: pip install 'matplotlib>=3.7'") from None
    names = [s["stage"] for s in doc["stages"]]
    xs = list(range(len(names)))
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.1 * len(names) + 4), 4.5), dpi=100)
    for ax, key, unit, scale in ((axes[0], "bits", "parameters (Mbit)", 1e6),
                                 (axes[1], "flops", "FLOPs (float mults + binary mults / 64)", 1.0)):
        for dx, side, colour in ((-0.2, "a", "tab:blue"), (0.2, "b", "tab:orange")):
            ax.bar([x + dx for x in xs], [s[side][key] / scale for s in doc["stages"]], width=0.4,
                   color=colour, label=("A: " if side == "a" else "B: ") + label(doc[side]))
        ax.set_xticks(xs, names, rotation=45 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
        ax.set_ylabel(unit)
        ax.set_xlabel("stage (top-level id scope)")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{label(doc['a'])} vs {label(doc['b'])}: "
                 f"B / A bits {_r(doc['ratio']['bits'])}, FLOPs {_r(doc['ratio']['flops'])}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, metadata=_PLOT_METADATA[fmt])
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def _r(v) -> str:
    return "-" if v is None else f"{v:.3f}"


@click.command()
@click.argument("spec_a", metavar="A", type=click.Path(dir_okay=False))
@click.argument("spec_b", metavar="B", type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE",
              help="Override a parameter of both specs (repeatable).")
@click.option("--set-a", "sets_a", multiple=True, metavar="NAME=VALUE",
              help="Override a parameter of A only (repeatable; after --set).")
@click.option("--set-b", "sets_b", multiple=True, metavar="NAME=VALUE",
              help="Override a parameter of B only (repeatable; after --set).")
@click.option("--network-a", default=None, help="Which network of A's file (default: the first).")
@click.option("--network-b", default=None, help="Which network of B's file (default: the first).")
@click.option("--max-nodes", default=100_000, show_default=True, type=click.IntRange(min=1),
              help="Size guard for each spec (IR nodes before collapsing joins).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Draw the per-stage bars of A and B here (.png, .svg or .pdf; needs matplotlib).")
@allow_import_option
def compare(spec_a, spec_b, sets, sets_a, sets_b, network_a, network_b, max_nodes, as_json, plot_path):
    """Costs of specs A and B side by side (each a .fr file or a model name): bits, float and
    binary parameters, FLOPs, float and binary MACs and depth, with the ratio B / A, and per
    stage (top-level id scope) bits and FLOPs."""
    from fractalc.compiler import compile_spec
    if plot_path:
        plot_format(plot_path)  # refuse a bad extension before compiling
    both = parse_sets(sets)
    compiled = []
    for spec, own, network in ((spec_a, sets_a, network_a), (spec_b, sets_b, network_b)):
        path, network = resolve_spec_argument(spec, network)
        compiled.append(compile_spec(path, {**both, **parse_sets(own)}, network=network,
                                     max_nodes=max_nodes))
    doc = comparison(*compiled)
    if as_json:
        click.echo(json.dumps(doc, indent=1))
    else:
        click.echo(text(doc), nl=False)
    if plot_path:
        plot(doc, plot_path)
        click.echo(f"wrote {plot_path}", err=True)
