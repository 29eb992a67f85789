import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from training_helpers import DISTRIBUTED_SETTINGS, append_corrupt_sample, train, write_shards  # noqa: E402


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> Path:
    """12 synthetic multi-shot clips (1 to 3 shots, 33 to 65 frames, 48x48) in 3 shards of 4."""
    folder = tmp_path_factory.mktemp("shards")
    write_shards(folder, num_samples=12, per_shard=4)
    return folder


@pytest.fixture(scope="session")
def corrupt_shards(shards, tmp_path_factory) -> Path:
    """``shards`` with a sample that fails to decode at the end of the second shard."""
    folder = tmp_path_factory.mktemp("corrupt-shards")
    for path in shards.glob("shard-*.tar"):
        shutil.copy(path, folder / path.name)
    append_corrupt_sample(folder / "shard-000001.tar", "bad-0001", broken="mp4")
    return folder


@pytest.fixture(scope="session")
def cache(shards, tmp_path_factory) -> Path:
    """The latent cache of ``shards`` made by ``python -m training.cache`` with the tiny config."""
    from training_helpers import TINY_CONFIG, run_module

    out = tmp_path_factory.mktemp("cache")
    run_module("training.cache", ["--config", str(TINY_CONFIG), "--out", str(out), f"data.shards=[{shards}/shard-*.tar]"])
    return out


@pytest.fixture(scope="session")
def pipeline_shards(tmp_path_factory) -> Path:
    """Shards made by the real pipeline (pipelines/caption.py: curation + the stand-in VLM captioner)
    from three synthetic 4-shot videos: six 2-shot scenes of 33 frames at 64x64."""
    from training_helpers import REPO, run_script

    from curation.synthetic import make_multishot_video

    root = tmp_path_factory.mktemp("pipeline")
    (root / "in").mkdir()
    for i in range(3):
        make_multishot_video(root / "in" / f"v{i}.mp4", [40, 36, 44, 40], width=160, height=96, fps=16, seed=i)
    run_script(REPO / "pipelines" / "caption.py", ["--input", str(root / "in"), "--output", str(root / "out"),
                                                   "--set", "curation.scenes.tiers={2s: 33}",
                                                   "--set", "curation.clips.width=64", "--set", "curation.clips.height=64"])
    return root / "out" / "shards"


@pytest.fixture(scope="session")
def one_process_run(shards, tmp_path_factory) -> Path:
    """One process at a global batch of 2 under ``DISTRIBUTED_SETTINGS``: the reference that two
    processes (FSDP under torchrun, and Ray Train workers) with a batch of 1 each must match."""
    output = tmp_path_factory.mktemp("one-process") / "one"
    train(output, f"{shards}/shard-*.tar", *DISTRIBUTED_SETTINGS, "data.batch_size=2")
    return output
