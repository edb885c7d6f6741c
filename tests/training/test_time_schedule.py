"""Cosine annealing over wall-clock time: values, limits, and a resume in another process."""

import io
import math

import pytest
import torch

from unet_seg.training.time_schedule import TimeCosineLR


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _scheduler(clock, seconds=100.0, eta_min=0.0, lr=0.01):
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    return optimizer, TimeCosineLR(optimizer, seconds, eta_min, clock=clock)


@pytest.mark.parametrize("spent,expected", [(0, 0.01), (50, 0.005), (100, 0.0), (250, 0.0)])
def test_the_rate_follows_the_cosine_of_the_time_spent(spent, expected):
    clock = FakeClock()
    optimizer, scheduler = _scheduler(clock)
    clock.now += spent
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, abs=1e-12)


def test_eta_min_is_the_floor():
    clock = FakeClock()
    optimizer, scheduler = _scheduler(clock, eta_min=0.001)
    clock.now += 25
    scheduler.step()
    expected = 0.001 + 0.009 * (1 + math.cos(math.pi / 4)) / 2
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    clock.now += 1000
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.001)


@pytest.mark.parametrize("seconds", [0, -5, float("nan"), float("inf"), None])
def test_a_budget_that_is_no_time_is_refused(seconds):
    with pytest.raises(ValueError, match=r"scheduler\.seconds must be a time > 0"):
        _scheduler(FakeClock(), seconds=seconds)


def test_a_resume_in_another_process_goes_on_from_the_time_spent():
    clock = FakeClock(now=5000.0)
    _, scheduler = _scheduler(clock)
    clock.now += 30
    scheduler.step()
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)  # as in a checkpoint
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # plain values only
    other = FakeClock(now=3.0)  # another process: its clock means something else
    optimizer, resumed = _scheduler(other)
    resumed.load_state_dict(state)
    other.now += 20  # 30 s before, 20 s now: half the budget
    resumed.step()
    assert resumed.fraction() == pytest.approx(0.5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.005)
