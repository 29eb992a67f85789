"""End to end on CPU: pipeline shards -> 50 steps -> the loss on a fixed set falls; outputs are usable."""

from __future__ import annotations

import av
from training_helpers import read_metrics, train

from holocine_model import WanDiT, get_config, load_checkpoint


def test_overfits_pipeline_shards_and_writes_every_output(pipeline_shards, tmp_path):
    out = tmp_path / "run"
    # Bucket = the pipeline's 33-frame tier. The stand-in captioner writes random text up to its caps
    # (global 100, shots 60, four 40-character descriptions): 512 tiny tokens hold any such prompt.
    train(out, f"{pipeline_shards}/shard-*.tar", "data.bucket=[33,32,32]", "data.text_len=512", "validation.every=25")
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
