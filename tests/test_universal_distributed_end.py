"""universal_model.training.end_distributed: a DDP run ends with its reducer freed while Python is alive.

A reducer left for the interpreter's exit aborted a rank now and then (torch 2.14, gloo; the two-rank bundle run,
tests/test_universal_train.py::test_ddp_two_processes_gloo, failed so in CI). The abort itself is a race; what
prevents it is checked here exactly: the reducer is gone when end_distributed returns.
"""

from __future__ import annotations

import weakref

import torch
import torch.distributed as dist

import universal_train_data  # noqa: F401  (puts the bundle on sys.path)
from conftest import free_port
from universal_model.training import end_distributed


def test_the_reducer_is_freed_and_the_process_group_destroyed():
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        net = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 2))
        loss = net(torch.randn(4, 3)).sum()
        loss.backward()  # the last loss stays referenced, as in an engine's state.output
        reducer = weakref.ref(net.reducer)
        end_distributed(net)
        assert reducer() is None
        assert not dist.is_initialized()
        assert net.module(torch.ones(1, 3)).shape == (1, 2)  # the wrapped module still works
        assert loss.requires_grad
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_a_plain_module_without_a_process_group_is_left_alone():
    net = torch.nn.Linear(2, 2)
    weight = net.weight.detach().clone()
    end_distributed(net)
    assert not dist.is_initialized() and torch.equal(net.weight, weight)
