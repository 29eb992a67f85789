"""``--ray-workers 2``: the same loop under Ray Train's TorchTrainer (a private local Ray, gloo)."""

from __future__ import annotations

from training_helpers import losses, train


def test_ray_train_workers_match_one_process(shards, tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    settings = ("optim.max_steps=3", "checkpoint.every=3", "validation.every=0")
    pattern = f"{shards}/shard-*.tar"
    train(tmp_path / "one", pattern, *settings, "data.batch_size=2")
    train(tmp_path / "ray", pattern, *settings, "data.batch_size=1", "--ray-workers", "2")
    one, ray = losses(tmp_path / "one"), losses(tmp_path / "ray")
    assert one.keys() == ray.keys() == {1, 2, 3}
    for step in one:
        assert abs(one[step] - ray[step]) <= 1e-5 * one[step]
    assert (tmp_path / "ray" / "checkpoints" / "step-00000003" / "__1_0.distcp").is_file()
    assert (tmp_path / "ray" / "export" / "dit.safetensors").is_file()
