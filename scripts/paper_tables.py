"""The paper's tables, reproduced: every model SoFAr names, its cost and the width the scaler gives.

    python scripts/paper_tables.py                 # ImageNet and CIFAR-100 tables (Markdown)
    python scripts/paper_tables.py --readings      # also the DRF readings grid (README "DRF structure")
    python scripts/paper_tables.py --dataset imagenet

For each model: depth (longest conv/linear path; SoFAr's count in parentheses where it differs),
its width (ResNets) or growth (DenseNets) as shipped, parameters (Mbit = 10^6 bits: 32 x float +
binary), FLOPs (float multiplications + binary / 64), the widest width whose cost fits the
baseline's budget by parameter bits and by FLOPs (`fractalc scale`), and the published width (the
number in the model's name). Baselines are budgets, not scaled ("-"). The output is deterministic;
README.md keeps a copy.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from fractalc.compiler import compile_spec
from fractalc.cost import cost
from fractalc.variants import budget_of, solve

SPECS = Path(__file__).resolve().parent.parent / "specs"

# (name in the paper, spec, baseline spec or None for a baseline, published width, SoFAr's depth)
MODELS = [
    ("Bi-Real ResNet18(64)", "bireal_resnet18", None, 64, 18),
    ("RF-c3d4 ResNet21(53)", "rf_c3d4_resnet21", "bireal_resnet18", 53, 21),
    ("F-c3d4 ResNet21(53) (ablation)", "f_c3d4_resnet21", "bireal_resnet18", 53, 21),
    ("RF-c4d8 ResNet37(41)", "rf_c4d8_resnet37", "bireal_resnet18", 41, 37),
    ("RF-c5d16 ResNet69(31)", "rf_c5d16_resnet69", "bireal_resnet18", 31, 69),
    ("Bi-Real ResNet34(64)", "bireal_resnet34", None, 64, 34),
    ("RF-c3d4 ResNet41(48)", "rf_c3d4_resnet41", "bireal_resnet34", 48, 41),
    ("RF-c4d8 ResNet77(35)", "rf_c4d8_resnet77", "bireal_resnet34", 35, 77),
    ("BinaryDenseNet51(32)", "binary_densenet51", None, 32, 51),
    ("DRF-c2d2 DenseNet51(53)", "drf_c2d2_densenet51", "binary_densenet51", 53, 51),
    ("DF-c2d2 DenseNet51(53) (ablation)", "df_c2d2_densenet51", "binary_densenet51", 53, 51),
    ("BinaryDenseNet69(32)", "binary_densenet69", None, 32, 69),
    ("DRF-c2d2 DenseNet69(48)", "drf_c2d2_densenet69", "binary_densenet69", 48, 69),
]
# The authors' BinaryDenseNets and Bi-Real18 with their published costs (reference section 6).
CALIBRATION = [
    ("Bi-Real ResNet18", "bireal_resnet18", 1.63e8, None),
    ("BinaryDenseNet28", "binary_densenet28", 2.58e8, 4.04),
    ("BinaryDenseNet37", "binary_densenet37", 2.70e8, 5.13),
]


def width_param(params: dict) -> str:
    return "width" if "width" in params else "growth"


def model_table(dataset: str) -> list[str]:
    ds = {"dataset": dataset}
    out = [f"**{dataset}**", "",
           "| model | depth | width | Mbit | FLOPs | scaler (params) | scaler (FLOPs) | published |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    budgets: dict[str, object] = {}
    for name, spec, base, published, named_depth in MODELS:
        c = compile_spec(SPECS / f"{spec}.fr", ds)
        co = cost(c.graph)
        w = c.params[width_param(c.params)]
        depth = str(co.depth) if co.depth == named_depth else f"{co.depth} ({named_depth})"
        if base is None:
            fit = ["-", "-"]
        else:
            if base not in budgets:
                budgets[base] = budget_of(SPECS / f"{base}.fr", ds)
            fit = [str(solve(SPECS / f"{spec}.fr", budgets[base], metric=m, overrides=ds).value)
                   for m in ("params", "flops")]
        mark = "" if base is None or fit[0] == str(published) else " *"
        out.append(f"| {name} | {depth} | {w} | {co.bits / 1e6:.2f} | {co.flops:.3e} | "
                   f"{fit[0]}{mark} | {fit[1]} | {published} |")
    return out


def calibration_table() -> list[str]:
    out = ["| model (ImageNet) | FLOPs published / fractalc | MiB published / fractalc |",
           "|---|---:|---:|"]
    for name, spec, flops, mib in CALIBRATION:
        co = cost(compile_spec(SPECS / f"{spec}.fr").graph)
        m = "-" if mib is None else f"{mib:.2f} / {co.bits / 8 / 2**20:.3f}"
        out.append(f"| {name} | {flops:.3g} / {co.flops:.4g} | {m} |")
    return out


# The DRF readings: (label, DRF overrides, budget overrides)
STACK_BN = [("shared", "one BN on the stack"), ("own", "a BN per column head")]
TRANSITIONS = [("[160, 192, 256]", "fixed 160/192/256"), ("[0, 0, 0]", "round(C / r / 32) * 32")]
BUDGETS = [({"layers": "halves", "trans_round": "lower"}, "BDN28/37, floor"),
           ({"layers": "halves", "trans_round": "nearest"}, "BDN28/37, round"),
           ({"layers": "chained", "trans_round": "nearest"}, "chained 32-growth convs, round")]


def readings_table() -> list[str]:
    out = ["| stack BN | DRF transitions | budget (BinaryDenseNet51/69(32)) | "
           "DenseNet51 params / FLOPs | DenseNet69 params / FLOPs | both published |",
           "|---|---|---|---:|---:|---|"]
    for (bn, bn_l), (tr, tr_l), (bo, bo_l) in itertools.product(STACK_BN, TRANSITIONS, BUDGETS):
        cells = []
        for net, base in (("drf_c2d2_densenet51", "binary_densenet51"),
                          ("drf_c2d2_densenet69", "binary_densenet69")):
            b = budget_of(SPECS / f"{base}.fr", bo)
            v = [solve(SPECS / f"{net}.fr", b, metric=m, overrides={"stack_bn": bn, "transitions": tr}).value
                 for m in ("params", "flops")]
            cells.append(f"{v[0]} / {v[1]}")
        hit = "yes" if cells[0].startswith("53 ") and cells[1].startswith("48 ") else ""
        out.append(f"| {bn_l} | {tr_l} | {bo_l} | {cells[0]} | {cells[1]} | {hit} |")
    out += ["", "How tight the fit is (default reading, parameter bits):", ""]
    for net, base, k in (("drf_c2d2_densenet51", "binary_densenet51", 53),
                         ("drf_c2d2_densenet69", "binary_densenet69", 48)):
        b = budget_of(SPECS / f"{base}.fr").bits
        at, above = (cost(compile_spec(SPECS / f"{net}.fr", {"growth": str(g)}).graph).bits
                     for g in (k, k + 1))
        out.append(f"- {net}: growth {k} costs {at:,} bits ({100 * (at / b - 1):+.2f} % of the "
                   f"budget {b:,}), growth {k + 1} costs {above:,} ({100 * (above / b - 1):+.2f} %)")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=["imagenet", "cifar100"], action="append",
                    help="one table per dataset (default: imagenet and cifar100)")
    ap.add_argument("--readings", action="store_true", help="also the DRF readings grid")
    args = ap.parse_args(argv)
    lines = []
    for ds in args.dataset or ["imagenet", "cifar100"]:
        lines += model_table(ds) + [""]
    lines += ["`*`: the scaler's width by parameter bits differs from the published one.", ""]
    lines += calibration_table()
    if args.readings:
        lines += ["", "DRF readings (growths given back by the scaler, params / FLOPs; published 53 and 48):",
                  ""] + readings_table()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
