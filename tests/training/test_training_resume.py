"""A run SIGKILLed in the middle of a step and resumed logs the same losses as an uninterrupted one."""

from __future__ import annotations

import signal

from training_helpers import losses, read_metrics, train

# Two loader workers and a shuffle buffer: the resumed stream must pick up mid-epoch, worker order included.
SETTINGS = ("optim.max_steps=8", "checkpoint.every=3", "validation.every=4", "data.num_workers=2", "data.shuffle_buffer=5")


def test_killed_run_resumes_with_the_same_losses(shards, tmp_path):
    pattern = f"{shards}/shard-*.tar"
    train(tmp_path / "straight", pattern, *SETTINGS)

    killed = train(tmp_path / "killed", pattern, *SETTINGS, "kill_in_step=7", check=False)
    assert killed.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL)
    assert (tmp_path / "killed" / "checkpoints" / "latest").read_text() == "step-00000006"
    assert max(losses(tmp_path / "killed")) == 6

    train(tmp_path / "killed", pattern, *SETTINGS, resume=True)
    straight, resumed = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "killed")
    assert [r["step"] for r in resumed] == [r["step"] for r in straight]
    for a, b in zip(straight, resumed):
        assert a.keys() == b.keys()
        for key in ("loss", "val_loss", "grad_norm", "lr"):
            if key in a:
                assert abs(a[key] - b[key]) <= 1e-6 * abs(a[key]), (a, b)
