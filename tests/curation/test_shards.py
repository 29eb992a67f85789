import pytest
import webdataset as wds
from pydantic import ValidationError

from curation.shards import SampleMeta, read_shard, shard_name, write_shard


def _meta(key="v-0000", cuts=(37, 73), prompt_cuts=None):
    edges = [0, *cuts, 121]
    shots = [{"start_frame": a, "end_frame": b, "caption": f"shot {i}"} for i, (a, b) in enumerate(zip(edges, edges[1:]))]
    n_cuts = len(cuts) if prompt_cuts is None else prompt_cuts
    prompt = "[global caption] g This scene contains 3 shots. [per shot caption] a" + " [shot cut] x" * n_cuts
    return {
        "key": key,
        "source": {"uri": "in.mp4", "video_id": "v", "start_s": 0.0, "end_s": 7.5},
        "fps": 16,
        "num_frames": 121,
        "width": 832,
        "height": 480,
        "global_caption": "g",
        "characters": {"[character1]": "a woman"},
        "shots": shots,
        "shot_cut_frames": list(cuts),
        "prompt": prompt,
        "captioner": {"engine": "transformers", "model": "m", "prompt_version": "v1"},
    }


def test_round_trip_and_plain_webdataset_reader(tmp_path):
    samples = [(SampleMeta.model_validate(_meta(f"v-{i:04d}")), bytes([i]) * 100) for i in range(3)]
    path = tmp_path / shard_name(0)
    assert write_shard(path, samples) == 3
    assert not list(tmp_path.glob("*.partial"))
    assert [(m.key, b) for m, b in read_shard(path)] == [(m.key, b) for m, b in samples]
    plain = list(wds.WebDataset(str(path), shardshuffle=False))
    assert [s["__key__"] for s in plain] == ["v-0000", "v-0001", "v-0002"]
    assert SampleMeta.model_validate_json(plain[1]["json"]).shots[1].start_frame == 37


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_frames": 120}, "4k\\+1"),
        ({"shot_cut_frames": [37]}, "shot_cut_frames"),
        ({"prompt": "[global caption] g [per shot caption] a [shot cut] b"}, "shot cut"),
    ],
)
def test_invalid_samples_are_rejected(change, message):
    with pytest.raises(ValidationError, match=message):
        SampleMeta.model_validate({**_meta(), **change})


def test_cut_off_the_latent_grid_is_rejected():
    with pytest.raises(ValidationError, match="latent grid"):
        SampleMeta.model_validate(_meta(cuts=(36, 73)))


def test_failed_write_leaves_no_file(tmp_path):
    def broken():
        yield SampleMeta.model_validate(_meta()), b"x"
        raise RuntimeError("encoder died")

    with pytest.raises(RuntimeError):
        write_shard(tmp_path / "shard-000000.tar", broken())
    assert list(tmp_path.iterdir()) == []
