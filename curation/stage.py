"""The stage interface that every runner schedules: one job per stage, batches in, batches out.

A stage says what it needs (:class:`Resources`), loads what it needs once per worker
(:meth:`Stage.setup`: a model, a client) and then turns batches of tasks into batches of tasks
(:meth:`Stage.process`). A task is a plain picklable object (a video, a scene); a stage may
return fewer or more tasks than it got (a video becomes its scenes). Runners only schedule:
:func:`run_locally` here, in one process, and the Ray job (``pipelines.caption``) on a cluster.
Both run the same stage objects, so what one runner does the other does too.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage holds while it runs."""

    cpus: float = 1.0
    gpus: float = 0.0
    # Workers that keep their set-up state between batches (a model copy each); 0: plain tasks,
    # which hold their CPUs only while they run.
    actors: int = 0


class Stage(ABC):
    """One step of a pipeline. Subclasses set ``name``, ``resources`` and ``batch_size``."""

    name: str = "stage"
    resources: Resources = Resources()
    batch_size: int = 1

    def __init__(self) -> None:
        # Identity across pickling: a worker process sets up each stage object once.
        self.stage_id = uuid.uuid4().hex

    def setup(self) -> None:
        """Load what every batch needs; called once per worker before its first batch."""

    @abstractmethod
    def process(self, tasks: list[Any]) -> list[Any]:
        """This stage's outputs for a batch of at most ``batch_size`` tasks."""


def batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_locally(stages: list[Stage], tasks: Iterable[Any]) -> Iterator[Any]:
    """Every stage in this process, streaming: a task leaves the last stage before the next one
    enters the first (when batch sizes are 1), so memory holds one batch per stage."""
    for stage in stages:
        stage.setup()
    stream: Iterable[Any] = tasks
    for stage in stages:
        stream = _through(stage, stream)
    yield from stream


def _through(stage: Stage, tasks: Iterable[Any]) -> Iterator[Any]:
    for batch in batches(tasks, stage.batch_size):
        yield from stage.process(batch)
