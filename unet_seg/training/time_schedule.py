"""Cosine annealing over wall-clock time, for runs whose length is a time budget.

An epoch-based cosine schedule needs the number of epochs the budget holds, which depends on
how fast this machine trains this network: a plan that guesses it from a stated throughput
either stops annealing early (the run is cut by ``trainer.max_time`` at a high rate) or anneals
to zero long before the budget is spent (a fast machine trains a few minutes of a half-hour
budget). :class:`TimeCosineLR` anneals over the seconds themselves: the rate at time ``t`` after
the schedule starts is ``eta_min + (lr0 - eta_min) (1 + cos(pi min(t / seconds, 1))) / 2``,
with the run stopped by ``trainer.max_time`` at the same budget (``conf/scheduler/
cosine_time.yaml``; the planner writes both). Lightning steps it once per epoch.

A resumed run continues where it stopped: the checkpoint keeps the seconds already spent, not
a clock reading (which means nothing in another process).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

Clock = Callable[[], float]


class TimeCosineLR(torch.optim.lr_scheduler.LRScheduler):
    """Cosine annealing of every parameter group's rate from its initial value to ``eta_min``
    over ``seconds`` of wall-clock time (``clock``, default ``time.monotonic``), counted from
    the scheduler's construction (the start of training)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        seconds: float | None = None,
        eta_min: float = 0.0,
        clock: Clock | None = None,
    ) -> None:
        # None: scheduler=cosine_time without scheduler.seconds (its ??? in the config)
        if seconds is None or not math.isfinite(float(seconds)) or float(seconds) <= 0:
            raise ValueError(
                f"scheduler.seconds must be a time > 0 (the budget in seconds, as "
                f"trainer.max_time), got {seconds}"
            )
        seconds = float(seconds)
        self.seconds, self.eta_min = seconds, float(eta_min)
        self._clock: Clock = clock or time.monotonic
        self._start = self._clock()
        super().__init__(optimizer)

    def fraction(self) -> float:
        """The share of the budget spent, 0..1."""
        return min(max((self._clock() - self._start) / self.seconds, 0.0), 1.0)

    def get_lr(self) -> list[float]:
        factor = (1.0 + math.cos(math.pi * self.fraction())) / 2.0
        return [self.eta_min + (base - self.eta_min) * factor for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        """Plain values only (a checkpoint loads with ``weights_only=True``): the seconds spent
        instead of the clock and its reading."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_clock")}
        state["_start"] = None
        state["elapsed"] = self._clock() - self._start
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        elapsed = float(state.pop("elapsed", 0.0))
        state.pop("_start", None)
        self.__dict__.update(state)
        self._start = self._clock() - elapsed
