"""Run the training loop under Ray Train: ``python -m training.train … --ray-workers N``.

``TorchTrainer`` starts one worker per GPU (or CPU process without GPUs), sets up the process group
and the ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` variables, and each worker runs ``train`` unchanged,
so FSDP, checkpoints and resume behave as under torchrun. Submit to a cluster with
``ray job submit --working-dir . -- python -m training.train --config … --ray-workers N``; OUTPUT must
then be storage every worker can reach (a shared filesystem), since checkpoints are written there.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .config import TrainConfig, config_from_dict, config_to_dict


def _worker(loop_config: dict) -> None:
    from .train import train

    train(config_from_dict(loop_config["config"]), loop_config["resume"], loop_config["overwrite"])


def launch(config: TrainConfig, num_workers: int, resume: bool, overwrite: bool) -> None:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    # Join the cluster a job was submitted to (RAY_ADDRESS); otherwise start a private local Ray rather
    # than attach to whatever cluster this machine last ran.
    started = not ray.is_initialized() and not os.environ.get("RAY_ADDRESS")
    if started:
        root = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        ray.init(address="local", include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    output = Path(config.output).resolve()
    config.output = str(output)
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"config": config_to_dict(config), "resume": resume, "overwrite": overwrite},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=torch.cuda.is_available()),
        run_config=RunConfig(name="holocine-train", storage_path=str(output / "ray")),
    )
    try:
        trainer.fit()
    finally:
        if started:
            ray.shutdown()
