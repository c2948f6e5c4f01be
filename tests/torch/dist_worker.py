"""Worker for the 2-process DistributedDataParallel test (importable by spawned children)."""

from __future__ import annotations

import pathlib

import torch
import torch.distributed as dist
from torch import nn

import wdmask_torch
from tests.torch import models as tm


def ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(rank)  # different initial weights: DDP broadcasts rank 0's
        model = tm.resnet("basic")
        ddp = nn.parallel.DistributedDataParallel(model)
        groups = wdmask_torch.groups(ddp, weight_decay=1e-2)
        by_id = {id(p): n for n, p in model.named_parameters()}
        names = [[by_id[id(p)] for p in g["params"]] for g in groups]
        opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
        gen = torch.Generator().manual_seed(100 + rank)  # different data per rank
        for _ in range(3):
            x, y = torch.randn(4, 3, 8, 8, generator=gen), torch.randint(0, 5, (4,), generator=gen)
            opt.zero_grad()
            nn.functional.cross_entropy(ddp(x), y).backward()
            opt.step()
        everyone: list[object] = [None] * world
        dist.all_gather_object(everyone, names)
        params = {n: p.detach().clone() for n, p in model.named_parameters()}
        torch.save({"names": names, "gathered": everyone, "params": params,
                    "wd": [g["weight_decay"] for g in opt.param_groups]},
                   pathlib.Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
