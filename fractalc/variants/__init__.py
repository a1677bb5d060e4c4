"""Scale a spec's width to a baseline's budget, and generate families of fractal variants.

- `solver`: budgets (`budget_of`, `Measure`) and the search (`solve`: the largest value of an
  integer parameter whose cost fits the budget, exact at the boundary);
- `write`: scaled spec files (`write_scaled`, `rewrite_spec`), comments and layout kept;
- `space`: the declarative TOML spaces (`load_space`; format in README.md, examples/spaces/);
- `generate`: one formatted, scaled spec per point of a space, with its provenance header;
- `report`: the table, CSV and Pareto plot of a generated family.

Everything is deterministic: same space and library, same bytes.
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
