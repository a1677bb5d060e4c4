"""torch.export, torch.compile (whole graph, no breaks) and DistributedDataParallel."""
from __future__ import annotations

import pytest

import torch

from fractalc.backends.torch import build_torch  # noqa: E402

from conftest import SPECS  # noqa: E402
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def test_export_block_spec_matches_eager():
    model = build_torch(SPECS / "rf_c3d4.fr", channels=4, size=6).eval()
    x = torch.randn(2, 4, 6, 6)
    ep = torch.export.export(model, (x,))
    # Eager eval runs the deployed (exact) binary arithmetic, whose near-tie fallback is
    # data-dependent Python; a traced module keeps the float path, equal up to float rounding
    # (and at exact ties of a pre-sign value, the sign may differ: see README "Eval equals deployment").
    assert torch.allclose(ep.module()(x), model(x), atol=1e-5)
    model.set_mode("fp")  # the mode is a Python switch: a new export follows it
    assert torch.allclose(torch.export.export(model, (x,)).module()(x), model(x))


def test_compile_fullgraph_train_with_drop_path_and_eval():
    torch._dynamo.reset()
    model = build_torch(SPECS / "rf_c3d4.fr", channels=4, size=6).set_drop_path(True)
    x = torch.randn(2, 4, 6, 6)
    # fullgraph=True raises on any graph break, so our forward (binarizers, drop-path draws,
    # joins) must trace as one graph; aot_eager also traces the backward.
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    y = compiled(x)
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    assert torch.allclose(compiled(x), model(x), atol=1e-6)
    torch._dynamo.reset()


def _ddp_worker(rank: int, world: int, model, init_file: str, out_file: str):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    import copy

    torch.set_num_threads(1)
    model = copy.deepcopy(model)  # torch.multiprocessing hands over shared memory: make it private
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    before = [p.detach().clone() for p in model.parameters()]
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    torch.manual_seed(rank)  # different data and drop-path draws on each rank
    for _ in range(2):
        opt.zero_grad()
        ddp(torch.randn(4, 4, 6, 6)).square().mean().backward()
        opt.step()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    changed = any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    if rank == 0:
        torch.save({"same": torch.equal(gathered[0], gathered[1]), "changed": changed}, out_file)
    # both ranks leave together: tearing gloo down while the other rank is still in its last
    # collective aborted a run once ("terminate called without an active exception")
    dist.barrier()
    dist.destroy_process_group()


def test_distributed_data_parallel_two_processes(tmp_path):
    import torch.multiprocessing as mp

    # Built once here (the network pickles to the workers); drop-path on, so the ranks take
    # different paths: masks multiply, so every parameter still gets a gradient to reduce.
    model = build_torch(SPECS / "rf_c3d4.fr", channels=4, size=6).set_drop_path(True)
    out = tmp_path / "result.pt"
    mp.spawn(_ddp_worker, args=(2, model, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    res = torch.load(out, weights_only=True)
    assert res == {"same": True, "changed": True}  # replicas stay identical while training
