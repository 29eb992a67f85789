"""Stages (``curation.stage``) on a Ray cluster: Ray Data schedules them, nothing more.

Rows are ``{"task": bytes}``: the task object pickled (:func:`rows`, :func:`tasks_of`), so Ray Data
never tries to read a task as Arrow columns and nothing is re-parsed between stages. A stage
with ``resources.actors`` runs in that many actors, set up when each starts (a model per actor);
any other stage runs as plain tasks, which hold their CPUs only while they run and set up once
per worker process.
"""

from __future__ import annotations

import pickle
from typing import Any

from curation.stage import Stage


def rows(tasks: list[Any]) -> dict[str, list[bytes]]:
    return {"task": [pickle.dumps(task) for task in tasks]}


def tasks_of(batch: dict[str, Any]) -> list[Any]:
    return [pickle.loads(data) for data in batch["task"]]


def task_of(row: dict[str, Any]) -> Any:
    return pickle.loads(row["task"])


def from_tasks(tasks: list[Any], blocks: int | None = None) -> Any:
    """A dataset of these tasks, in ``blocks`` blocks (default: Ray's choice)."""
    import ray.data

    return ray.data.from_items([{"task": pickle.dumps(task)} for task in tasks], override_num_blocks=blocks)

# Set-up stages of this worker process, by stage id: a task-run stage sets up once per worker.
_READY: dict[str, Stage] = {}


def _run_stage(batch: dict[str, Any], stage: Stage) -> dict[str, list[Any]]:
    ready = _READY.get(stage.stage_id)
    if ready is None:
        stage.setup()
        ready = _READY[stage.stage_id] = stage
    return rows(ready.process(tasks_of(batch)))


class _StageActor:
    """A stage in an actor of its own, set up when the actor starts."""

    def __init__(self, stage: Stage) -> None:
        stage.setup()
        self.stage = stage

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        return rows(self.stage.process(tasks_of(batch)))


def schedule(dataset: Any, stage: Stage) -> Any:
    """``dataset`` (rows of tasks) through ``stage`` on the cluster, with its resources."""
    import ray.data

    r = stage.resources
    common = {"batch_size": stage.batch_size, "num_cpus": r.cpus, "num_gpus": r.gpus or None}
    if r.actors:
        return dataset.map_batches(
            _StageActor, fn_constructor_kwargs={"stage": stage}, compute=ray.data.ActorPoolStrategy(size=r.actors), **common
        )
    return dataset.map_batches(_run_stage, fn_kwargs={"stage": stage}, **common)
