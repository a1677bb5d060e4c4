"""Training and evaluation of compiled specs (needs torch; imported only by `fractalc train/eval`).

Modules: `data` (digits, CIFAR pickles, image folders), `config` (TOML config and the paper's
recipes), `checkpoint` (atomic, validated checkpoints), `loop` (single-process and DDP training),
`evaluate` (top-1/top-5 with torch, onnxruntime or the XNOR runtime), `plot` (learning curves).
"""
