"""End to end on CPU: pipeline shards -> 50 steps -> the loss on a fixed set falls; outputs are usable."""

from __future__ import annotations

import av
import pytest
from training_helpers import TINY_CONFIG, read_metrics, train

from holocine_model import WanDiT, get_config, load_checkpoint
from training.train import main


def test_overfits_pipeline_shards_and_writes_every_output(pipeline_shards, tmp_path):
    out = tmp_path / "run"
    # Bucket = the pipeline's 33-frame tier; the tiny config's text_len holds the stand-in captioner's prompts.
    train(out, f"{pipeline_shards}/shard-*.tar", "data.bucket=[33,32,32]", "validation.every=25")
    rows = read_metrics(out)
    val = {row["step"]: row["val_loss"] for row in rows if "val_loss" in row}
    assert sorted(val) == [0, 25, 50]
    assert val[50] < 0.5 * val[0] and val[25] < val[0], val
    assert [row["step"] for row in rows if "loss" in row] == list(range(1, 51))
    assert all(row["skipped"] == 0 for row in rows if "loss" in row)

    # Validation samples decode to real mp4s of the bucket's size and length.
    with av.open(str(out / "samples" / "step-00000050.mp4")) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 33 and (frames[0].width, frames[0].height) == (32, 32)
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))

    # The exported safetensors load strictly into a fresh model (Wan layout).
    model = WanDiT(get_config("tiny"))
    assert load_checkpoint(model, out / "export" / "dit.safetensors") == ([], [])


@pytest.mark.timeout(120)  # it used to wait forever for a sample
def test_a_run_on_shards_of_which_no_sample_decodes_stops_naming_the_reason(shards, tmp_path):
    # Every clip is shorter than 129 frames. Validation samples are read first, so it stops there when on.
    args = ["--config", str(TINY_CONFIG), f"data.shards=[{shards}/shard-*.tar]", "data.bucket=[129,32,32]"]
    reason = r"51 x ValueError: N frames, the bucket needs N \(first: clip-\d+: \d+ frames, the bucket needs 129\)"
    with pytest.raises(RuntimeError, match=r"^51 of the last 51 samples failed to decode.*: " + reason):
        main([*args, f"output={tmp_path / 'train'}", "validation.every=0"])
    with pytest.raises(RuntimeError, match=r"^no sample of the shards decodes: 12 x ValueError: N frames"):
        main([*args, f"output={tmp_path / 'validate'}", "validation.every=1"])
