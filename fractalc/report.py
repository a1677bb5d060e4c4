"""Human-readable tables for `fractalc stats` and `fractalc params`."""
from __future__ import annotations

from .cost import Cost


def _shape(s) -> str:
    return "x".join(map(str, s))


def stats_table(compiled, co: Cost, layers: bool = True) -> str:
    lines = [f"{compiled.name}  ({compiled.spec.main}"
             + (", " + ", ".join(f"{k}={v}" for k, v in compiled.overrides.items()) if compiled.overrides else "")
             + ")"]
    if layers:
        rows = [l for l in co.layers if l.float_params or l.binary_params or l.float_mults or l.binary_mults]
        w = max([len(l.id) for l in rows] + [5])
        head = f"{'layer':<{w}}  {'op':<10} {'output':>12} {'fp params':>11} {'bin params':>11} " \
               f"{'fp mults':>13} {'bin mults':>14} {'FLOPs':>12}"
        lines += [head, "-" * len(head)]
        for l in rows:
            lines.append(f"{l.id:<{w}}  {l.op:<10} {_shape(l.shape):>12} {l.float_params:>11,} "
                         f"{l.binary_params:>11,} {l.float_mults:>13,} {l.binary_mults:>14,} {l.flops:>12,.0f}")
        lines.append("-" * len(head))
    j = co.to_json(per_layer=False)
    p, f = j["params"], j["flops"]
    lines += [
        f"parameters : {p['float']:,} float (incl. BN scale/shift {p['bn']:,}) + {p['binary']:,} binary"
        f"   [BN running stats: {p['bn_buffers']:,} buffers, not counted]",
        f"size       : {p['bits']:,} bits = 32 x {p['float']:,} + {p['binary']:,} = {p['mbit']:.3f} Mbit"
        f" = {p['mib']:.3f} MiB ({p['bytes']:,.0f} bytes)",
        f"FLOPs      : {f['total']:.4e} = {f['float_mults']:,} float mults + {f['binary_mults']:,} binary mults / 64"
        f"   (binary share of MACs {100 * f['binary_mac_share']:.1f} %)",
        f"depth      : {j['depth']} (conv + linear layers on the longest path)",
    ]
    return "\n".join(lines) + "\n"


def params_table(spec, values: dict) -> str:
    from fractalc.lang.expand import describe
    lines = []
    w = max([len(n) for n in spec.params] + [4])
    for name, prm in spec.params.items():
        v = values[name]
        shown = f'"{v}"' if isinstance(v, str) else (
            "[" + ", ".join(map(str, v)) + "]" if isinstance(v, tuple) else
            str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, (int, float)) else describe(v))
        extra = ""
        if prm.choices:
            extra = "  choices: " + ", ".join(s.value if hasattr(s, "value") else "?" for s in prm.choices)
        lines.append(f"{name:<{w}} = {shown:<24} # {prm.loc}{extra}")
    return "\n".join(lines) + "\n"
