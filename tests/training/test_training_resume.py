"""A run SIGKILLed in the middle of a step and resumed logs the same losses as an uninterrupted one;
a new run never mixes its checkpoints with an earlier run's."""

from __future__ import annotations

import signal

import pytest
import torch
from training_helpers import TINY_CONFIG, losses, read_metrics, train

from holocine_model import WanDiT, get_config
from training import checkpointing
from training.data import Position
from training.train import main

# Two loader workers and a shuffle buffer: the resumed stream must pick up mid-epoch, worker order and
# the samples skipped before the checkpoint included.
SETTINGS = ("optim.max_steps=8", "checkpoint.every=3", "validation.every=4", "data.num_workers=2", "data.shuffle_buffer=5")


def test_killed_run_resumes_with_the_same_losses(corrupt_shards, tmp_path):
    pattern = f"{corrupt_shards}/shard-*.tar"
    train(tmp_path / "straight", pattern, *SETTINGS)
    skipped = {r["step"]: r["skipped"] for r in read_metrics(tmp_path / "straight") if "skipped" in r}
    assert skipped[6] == 1, "the corrupt sample comes before the checkpoint the killed run resumes from"

    killed = train(tmp_path / "killed", pattern, *SETTINGS, "kill_in_step=7", check=False)
    assert killed.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL)
    assert (tmp_path / "killed" / "checkpoints" / "latest").read_text() == "step-00000006"
    assert max(losses(tmp_path / "killed")) == 6

    train(tmp_path / "killed", pattern, *SETTINGS, resume=True)
    straight, resumed = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "killed")
    assert [r["step"] for r in resumed] == [r["step"] for r in straight]
    for a, b in zip(straight, resumed):
        assert a.keys() == b.keys() and a.get("skipped") == b.get("skipped")
        for key in ("loss", "val_loss", "grad_norm", "lr"):
            if key in a:
                assert abs(a[key] - b[key]) <= 1e-6 * abs(a[key]), (a, b)


def test_a_new_run_refuses_an_earlier_runs_output_unless_told_to_start_over(shards, tmp_path):
    out, checkpoints = tmp_path / "run", tmp_path / "run" / "checkpoints"
    args = ["--config", str(TINY_CONFIG), f"output={out}", f"data.shards=[{shards}/shard-*.tar]", "validation.every=0"]

    def saved() -> tuple[str, list[str]]:
        return (checkpoints / "latest").read_text(), sorted(p.name for p in checkpoints.glob("step-*"))

    main([*args, "optim.max_steps=3", "checkpoint.every=1"])
    assert saved() == ("step-00000003", ["step-00000002", "step-00000003"])  # checkpoint.keep: 2 by default
    # Such a run once deleted its own step-1 (the earlier run's later steps sorted after it) and left
    # `latest` naming it, so the next --resume crashed.
    with pytest.raises(FileExistsError, match="--resume.*--overwrite"):
        main([*args, "optim.max_steps=1", "checkpoint.every=1"])
    assert saved() == ("step-00000003", ["step-00000002", "step-00000003"]) and set(losses(out)) == {1, 2, 3}

    main([*args, "--overwrite", "optim.max_steps=1", "checkpoint.every=1"])
    assert saved() == ("step-00000001", ["step-00000001"]) and set(losses(out)) == {1}
    # --resume anywhere among the overrides.
    main(["--resume", "optim.max_steps=3", *args, "checkpoint.every=1", "checkpoint.keep=1"])
    assert saved() == ("step-00000003", ["step-00000003"]) and set(losses(out)) == {1, 2, 3}


def test_retention_keeps_the_newest_checkpoints_by_step_number(tmp_path):
    model = WanDiT(get_config("tiny"))
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    def save(step: int, keep: int) -> tuple[str, list[str]]:
        checkpointing.save(tmp_path, step, model, optimizer, scheduler, Position(), 0, keep)
        return (tmp_path / "latest").read_text(), sorted(p.name for p in tmp_path.glob("step-*"))

    for step in (99_999_999, 100_000_000):
        save(step, keep=2)
    # By name, step-99999999 sorts last and step-100000000 would go.
    assert save(100_000_001, keep=2) == ("step-100000001", ["step-100000000", "step-100000001"])
    # Folders past the step saved are what a run killed while saving leaves (this run resumed before
    # them): they go, not the checkpoint `latest` names.
    assert save(99_999_999, keep=1) == ("step-99999999", ["step-99999999"])
