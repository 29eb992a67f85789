"""FSDP2 over 2 gloo processes gives the losses of 1 process at the same global batch."""

from __future__ import annotations

from training_helpers import DISTRIBUTED_SETTINGS as SETTINGS
from training_helpers import assert_same_metrics, read_metrics, rewind, train


def test_two_process_fsdp_matches_one_process(shards, one_process_run, tmp_path):
    pattern = f"{shards}/shard-*.tar"
    train(tmp_path / "two", pattern, *SETTINGS, "data.batch_size=1", nproc=2)
    one, two = read_metrics(one_process_run), read_metrics(tmp_path / "two")
    assert [r["step"] for r in two] == [0, 1, 2, 2, 3, 4, 4]
    assert_same_metrics(one, two)
    # Sharded DCP checkpoints: one file per rank.
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints" / "step-00000004").glob("*.distcp")) == \
        ["__0_0.distcp", "__1_0.distcp"]
    assert (tmp_path / "two" / "export" / "dit.safetensors").is_file()


def test_context_parallel_matches_one_process_and_resumes(shards, one_process_run, tmp_path):
    """Two ranks splitting each sample's tokens train as one rank does, and a resumed run goes on alike."""
    pattern = f"{shards}/shard-*.tar"
    # One context-parallel group reads the stream one process reads: the same batches of 2.
    train(tmp_path / "cp", pattern, *SETTINGS, "data.batch_size=2", "parallel.context=2", nproc=2)
    cp = read_metrics(tmp_path / "cp")
    assert [r["step"] for r in cp] == [0, 1, 2, 2, 3, 4, 4]
    assert_same_metrics(read_metrics(one_process_run), cp)
    # Resume the context-parallel run from its step-2 checkpoint: steps 3 and 4 again, same losses.
    resumed = rewind(tmp_path / "cp", tmp_path / "resumed", 2)
    train(resumed, pattern, *SETTINGS, "data.batch_size=2", "parallel.context=2", nproc=2, resume=True)
    after = {r["step"]: r["loss"] for r in read_metrics(resumed) if "loss" in r}
    before = {r["step"]: r["loss"] for r in cp if "loss" in r}
    for step in (3, 4):
        assert abs(after[step] - before[step]) <= 1e-6 * abs(before[step]), (step, after, before)
