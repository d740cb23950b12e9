"""TrainingTimeBudget on a real ignite Engine whose epochs take a known time."""

from __future__ import annotations

import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ignite.engine import Engine, Events

import universal_train_data  # noqa: F401  (puts the bundle on sys.path)
from monai.handlers import LrScheduleHandler
from monai.optimizers import WarmupCosineSchedule
from conftest import free_port
from universal_model.training import TrainingTimeBudget

EPOCH_S = 0.05


def _engine_and_scheduler(planned_epochs: int):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = WarmupCosineSchedule(optimizer, warmup_steps=planned_epochs // 20, t_total=planned_epochs)

    def step(engine, batch):
        optimizer.step()
        time.sleep(EPOCH_S / 5)

    engine = Engine(step)
    LrScheduleHandler(scheduler, print_lr=False).attach(engine)
    lrs = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: lrs.append(optimizer.param_groups[0]["lr"]))
    return engine, scheduler, lrs


def test_budget_shortens_run_and_schedule():
    engine, scheduler, lrs = _engine_and_scheduler(1000)
    # the margin leaves room for epochs that run slower than the measured ones on a busy machine
    TrainingTimeBudget(minutes=1.0 / 60, lr_scheduler=scheduler, margin=0.3).attach(engine)
    start = time.monotonic()
    engine.run(range(5), max_epochs=1000)
    elapsed = time.monotonic() - start
    assert 3 <= engine.state.epoch <= 16, engine.state.epoch
    assert elapsed < 2.0
    assert scheduler.t_total == engine.state.max_epochs == engine.state.epoch
    assert scheduler.warmup_steps == 1  # 50 warm-up epochs scaled to the shortened run
    assert lrs[-1] < 0.05 * max(lrs)  # the cosine reached its end instead of stopping near the top


def test_budget_stops_when_epochs_slow_down():
    engine, scheduler, _ = _engine_and_scheduler(1000)
    TrainingTimeBudget(minutes=1.0 / 60, lr_scheduler=scheduler, margin=0.0).attach(engine)
    engine.add_event_handler(Events.EPOCH_COMPLETED(once=3), lambda e: time.sleep(0.6))
    engine.run(range(5), max_epochs=1000)
    assert engine.state.epoch < engine.state.max_epochs  # terminated before the planned end


def test_budget_off_and_generous_budgets_change_nothing():
    for minutes in (0, 10):
        engine, scheduler, _ = _engine_and_scheduler(6)
        TrainingTimeBudget(minutes=minutes, lr_scheduler=scheduler).attach(engine)
        engine.run(range(2), max_epochs=6)
        assert engine.state.epoch == engine.state.max_epochs == scheduler.t_total == 6


@pytest.mark.parametrize("kwargs", [{"measure_epochs": 0}, {"margin": 1.0}])
def test_bad_settings_raise(kwargs):
    with pytest.raises(ValueError, match="TrainingTimeBudget"):
        TrainingTimeBudget(minutes=1, **kwargs)


def _rank_run(rank: int, port: int, results) -> None:
    """One gloo rank whose epochs take 0.05 s (rank 0) or 0.1 s (rank 1) under a 1 s budget."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        engine = Engine(lambda engine, batch: time.sleep((rank + 1) * EPOCH_S / 5))
        TrainingTimeBudget(minutes=1.0 / 60, margin=0.0).attach(engine)
        engine.run(range(5), max_epochs=1000)
        results[rank] = engine.state.epoch
    finally:
        dist.destroy_process_group()


def test_ranks_agree_on_the_slowest_rank_under_gloo():
    results = mp.Manager().dict()
    mp.spawn(_rank_run, args=(free_port(), results), nprocs=2, join=True)
    assert results[0] == results[1] <= 12, dict(results)  # the slow rank's count, not the fast one's ~20
