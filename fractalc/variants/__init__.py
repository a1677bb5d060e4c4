"""Scale a spec's width to a baseline's budget, and generate families of fractal variants.

Scaling (`solve`): the largest value v >= 1 of an integer parameter (default `width`, else
`growth`) whose cost does not exceed a budget on the chosen metric(s): ``params`` = parameter
bits, ``flops`` = FLOPs (fractalc.cost), ``both`` = both. The search assumes the cost grows
strictly with the parameter and checks it at every value it visits (a `ScaleError` otherwise):
it starts at the spec's own value, brackets the answer by doubling (or halving), then bisects,
so it compiles O(log v) times; it always visits v and v + 1, so the boundary is exact. It
refuses when even v = 1 exceeds the budget.

Generating (`generate`): a declarative TOML space (`load_space`, format in README.md and
examples/spaces/) of SoFAr networks: family F / RF (binary ResNets) or DF / DRF (binary
DenseNets), columns, blocks per stage, join (only "mean": every join of the IR is an
equal-weight mean), dataset, and a budget (baseline spec + metric). Each point becomes a plain,
formatted `.fr` spec importing the shared library (specs/lib, found beside the baseline) by a
path relative to the output directory, its width scaled to the budget, its header recording the
space (name and sha256), the point, the budget, the hashes of the baseline and the library,
and the fractalc version. Points that fail (shape clash, size guard, budget too small) are
reported and skipped. Everything is deterministic: same space and library, same bytes.

Modules: `solver` (budgets and the search), `write` (scaled spec files), `space` (the TOML
spaces), `generate` (a family of specs), `report` (table, CSV, Pareto plot).
"""
from __future__ import annotations

from fractalc.variants.solver import (METRICS, DEFAULT_LIMIT, ScaleError, Measure, measure,
                                      budget_of, default_param, ScaleResult, metric_value, relabel,
                                      solve, scale_table)
from fractalc.variants.write import (one_line, import_path, write_scaled, rewrite_spec)
from fractalc.variants.space import (SpaceError, FAMILIES, BASES, JOINS, DATASETS, DENSE_DEFAULTS,
                                     MAX_SPACE_BYTES, MAX_SPACE_POINTS, Point, Space, load_space)
from fractalc.variants.generate import (spec_text, Variant, Generated, COLUMNS, generate)
from fractalc.variants.report import (table, csv_text, plot, pareto_figure)

__all__ = [
    "METRICS", "DEFAULT_LIMIT", "ScaleError", "Measure", "measure", "budget_of", "default_param",
    "ScaleResult", "metric_value", "relabel", "solve", "scale_table", "one_line", "import_path",
    "write_scaled", "rewrite_spec", "SpaceError", "FAMILIES", "BASES", "JOINS", "DATASETS",
    "DENSE_DEFAULTS", "MAX_SPACE_BYTES", "MAX_SPACE_POINTS", "Point", "Space", "load_space",
    "spec_text", "Variant", "Generated", "COLUMNS", "generate", "table", "csv_text", "plot",
    "pareto_figure",
]
