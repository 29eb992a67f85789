"""``--ray-workers 2``: the same loop under Ray Train's TorchTrainer (a private local Ray, gloo).

The two workers form one context-parallel group on Ray's process group: the data-parallel split is
the one torchrun runs (test_training_fsdp), and this is the launch path that adds a device mesh."""

from __future__ import annotations

from training_helpers import DISTRIBUTED_SETTINGS, assert_same_metrics, read_metrics, train


def test_ray_train_context_parallel_workers_match_one_process(shards, one_process_run, tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    train(tmp_path / "ray", f"{shards}/shard-*.tar", *DISTRIBUTED_SETTINGS, "data.batch_size=2", "parallel.context=2", "--ray-workers", "2")
    one, ray = read_metrics(one_process_run), read_metrics(tmp_path / "ray")
    assert [r["step"] for r in ray] == [0, 1, 2, 2, 3, 4, 4]
    assert_same_metrics(one, ray)
    assert (tmp_path / "ray" / "checkpoints" / "step-00000004" / "__1_0.distcp").is_file()
    assert (tmp_path / "ray" / "export" / "dit.safetensors").is_file()
