"""Print the Markdown table of shipped specs used in README.md (python scripts/spec_table.py)."""
from __future__ import annotations

import sys
from pathlib import Path

from fractalc.compiler import compile_spec
from fractalc.cost import cost

root = Path(__file__).resolve().parent.parent
print("| spec | depth | width/growth | params (float + binary) | Mbit | MiB | FLOPs | binary share of MACs |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for p in sorted((root / "specs").glob("*.fr")):
    c = compile_spec(p)
    j = cost(c.graph).to_json(per_layer=False)
    w = c.params.get("width", c.params.get("growth", c.params.get("channels", "")))
    pp, f = j["params"], j["flops"]
    print(f"| `{p.name}` | {j['depth']} | {w} | {pp['float']:,} + {pp['binary']:,} | {pp['mbit']:.2f} | "
          f"{pp['mib']:.3f} | {f['total']:.3e} | {100 * f['binary_mac_share']:.1f} % |")
sys.exit(0)
