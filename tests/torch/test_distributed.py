"""2-process DistributedDataParallel (gloo, 127.0.0.1): identical groups and identical weights after 3 steps."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.torch.dist_worker import ddp_worker

# Two spawned processes each import torch and build a model: ~10 s on a quiet machine, so only with -m slow.
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ddp_two_ranks(tmp_path: object) -> None:
    mp.spawn(ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))  # type: ignore[operator]
    assert r0["names"] == r1["names"] == r0["gathered"][1] == r1["gathered"][0]
    assert r0["names"][1][0] == "conv1.weight"  # the DDP `module.` prefix is gone
    assert r0["wd"] == r1["wd"] == [0.0, 1e-2]
    assert list(r0["params"]) == list(r1["params"])
    for name, p in r0["params"].items():
        assert torch.equal(p, r1["params"][name]), name
