"""The latent cache: training on cached latents reproduces training on raw clips, with the same spans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import webdataset as wds
from safetensors.torch import load as load_safetensors
from webdataset import tariterators

from training.cache import SPAN_RULE, check_span_rule
from training.data import SampleDecoder, ShardCatalog
from training.encoders import load_tokenizer
from training.prompt import PromptTokenizer
from training_helpers import losses, train

from curation.shard_index import ShardIndex, index_url, scan_local_tar


def test_cache_shards_hold_latents_states_and_layout(cache):
    assert sorted(p.name for p in cache.glob("*.tar")) == [f"shard-00000{i}.tar" for i in range(3)]
    sample = next(iter(tariterators.tarfile_samples([{"url": str(cache / "shard-000000.tar")}])))
    tensors = load_safetensors(sample["safetensors"])
    assert tensors["latents"].shape == (4, 5, 4, 4)  # tiny VAE: 4 channels, (17-1)/4+1 frames, 32/8
    assert tensors["text_states"].shape[1] == 24 and tensors["shot_ids"].shape == (5,)
    # Each cache shard has its sample index, so readers split the cache by byte ranges too.
    for tar in cache.glob("*.tar"):
        index = ShardIndex.from_json(Path(index_url(tar)).read_bytes())
        assert index == scan_local_tar(tar) and len(index) == 4


def test_training_on_the_cache_matches_training_on_clips(shards, cache, tmp_path):
    settings = ("optim.max_steps=4", "checkpoint.every=4", "validation.every=0")
    train(tmp_path / "raw", f"{shards}/shard-*.tar", *settings)
    train(tmp_path / "cached", f"{cache}/shard-*.tar", *settings)
    raw, cached = losses(tmp_path / "raw"), losses(tmp_path / "cached")
    assert raw.keys() == cached.keys() == {1, 2, 3, 4}
    for step in raw:
        assert abs(raw[step] - cached[step]) <= 1e-5 * raw[step]


def test_cache_spans_follow_the_training_rule_and_stale_caches_are_refused(shards, cache, tmp_path):
    cached = next(iter(tariterators.tarfile_samples([{"url": str(cache / "shard-000000.tar")}])))
    raw = next(iter(tariterators.tarfile_samples([{"url": str(shards / "shard-000000.tar")}])))
    meta = json.loads(cached["json"])
    decoded = SampleDecoder((17, 32, 32), PromptTokenizer(load_tokenizer("tiny"), 512))(raw)
    assert meta["span_rule"] == SPAN_RULE
    assert meta["global_span"] == decoded["global_span"].tolist()
    assert meta["shot_spans"] == decoded["shot_spans"].tolist()
    check_span_rule(ShardCatalog.load([str(cache / "shard-000000.tar")]))
    check_span_rule(ShardCatalog.load([str(shards / "shard-000000.tar")]))
    # A cache written before the rule was recorded (spans by the old rule) is refused, not reused.
    stale = tmp_path / "stale.tar"
    del meta["span_rule"]
    with wds.TarWriter(str(stale)) as writer:
        writer.write({"__key__": meta["key"], "json": json.dumps(meta).encode(), "safetensors": cached["safetensors"]})
    with pytest.raises(ValueError, match="span rule None"):
        check_span_rule(ShardCatalog.load([str(stale)]))
