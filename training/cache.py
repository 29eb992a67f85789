"""Latent cache: encode clips and prompts once, write shards the trainer reads instead of raw clips.

    python -m training.cache --config training/configs/wan2.1-1.3b.yaml --out out/latents [key=value ...]
    torchrun --nproc-per-node 8 -m training.cache --config ... --out out/latents

Each source shard becomes one cache shard of the same name (ranks take shards ``i % world == rank``),
so the trainer's shard order, and with it the sample stream, is the same on cached and raw data.
A cache sample is ``KEY.json`` (key, token spans, the span rule) + ``KEY.safetensors``: normalised VAE
latents (fp32), umT5 states trimmed to the prompt's tokens (in the encoder's dtype) and latent shot ids.
Each cache shard gets a sample index next to it, as the pipeline's shards do, so training readers split
the cache by byte ranges too.
Train on it with ``data.shards=[out/latents/*.tar]``; the bucket and encoders must match.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import save as save_safetensors

from curation.shard_index import write_indexed_tar

from .config import TrainConfig, add_config_arguments, argument_parser, load_config
from .data import SampleDecoder, ShardCatalog, ShardStream, SkipGuard, collate, decoded, expand_shards
from .encoders import Encoders, load_encoders
from .parallel import init_world
from .prompt import PromptTokenizer

log = logging.getLogger("training.cache")

# The token-span rule the cached spans were computed with (curation.prompt_format: HoloCine's).
# Caches written before it was recorded used another rule; training refuses them (check_span_rule).
SPAN_RULE = "holocine"


def check_span_rule(catalog: ShardCatalog) -> None:
    """Raise if the shards are a latent cache whose spans were computed with another rule (from its first sample)."""
    shard = next((s for s, index in enumerate(catalog.indexes) if len(index)), None)
    first = catalog.read(shard, 0)[0] if shard is not None else {}
    if "safetensors" not in first:
        return  # raw shards: spans are computed now
    rule = json.loads(first["json"]).get("span_rule")
    if rule != SPAN_RULE:
        raise ValueError(f"{catalog.urls[shard]}: latent cache made with span rule {rule!r}, training uses "
                         f"{SPAN_RULE!r}; rebuild it with python -m training.cache")


def cache_sample(encoders: Encoders, batch: dict, index: int) -> dict:
    """One cache sample (webdataset dict) of sample ``index`` of an encoded ``batch``."""
    length = int(batch["attention_mask"][index].sum())
    layout = batch["layout"]
    shots = int(layout.shot_ids[index].max()) + 1
    tensors = {
        "latents": batch["latents"][index].float().contiguous().cpu(),
        "text_states": batch["text_states"][index, :length].to(encoders.dtype).contiguous().cpu(),
        "shot_ids": layout.shot_ids[index].contiguous(),
    }
    meta = {"key": batch["keys"][index], "global_span": layout.global_spans[index].tolist(),
            "shot_spans": layout.shot_spans[index, :shots].tolist(), "span_rule": SPAN_RULE}
    return {"__key__": meta["key"], "json": json.dumps(meta).encode(), "safetensors": save_safetensors(tensors)}


def cache_shard(url: str | ShardCatalog, out: Path, decoder: SampleDecoder, encoders: Encoders, batch_size: int,
                guard: SkipGuard) -> int:
    """Encode every readable sample of one shard into ``out`` and its sample index, atomically; returns the count."""
    shards = url if isinstance(url, ShardCatalog) else [url]
    samples = decoded(ShardStream(shards, decoder, shuffle_shards=False, shuffle_buffer=0, loop=False), guard)
    return write_indexed_tar(out, _encoded(samples, encoders, batch_size))


def _encoded(samples: Iterator[dict], encoders: Encoders, batch_size: int) -> Iterator[dict]:
    while chunk := [s for _, s in zip(range(batch_size), samples)]:
        batch = collate(chunk)
        batch["latents"] = encoders.encode_video(batch.pop("video"))
        batch["text_states"] = encoders.encode_text(batch["input_ids"], batch["attention_mask"])
        for i in range(len(chunk)):
            yield cache_sample(encoders, batch, i)


def run(config: TrainConfig, out: Path) -> None:
    world = init_world()
    out.mkdir(parents=True, exist_ok=True)
    dtype = getattr(torch, config.encoders.dtype) if world.device.type == "cuda" else torch.float32
    encoders = load_encoders(config.encoders.source, world.device, dtype)
    decoder = SampleDecoder(config.data.bucket, PromptTokenizer(encoders.tokenizer, config.data.text_len))
    # Indexes read (or tar headers scanned) once for all shards; each shard is then read by byte ranges.
    catalog = ShardCatalog.load(expand_shards(config.data.shards))
    guard = SkipGuard.from_config(config.data)
    for i, (url, index) in enumerate(zip(catalog.urls, catalog.indexes)):
        if i % world.size != world.rank:
            continue
        name = Path(url.rsplit("/", 1)[-1]).name
        one = ShardCatalog((url,), (index,), 0)
        count = cache_shard(one, out / name, decoder, encoders, config.data.batch_size, guard)
        log.info("cached %d samples of %s", count, url)


def build_parser() -> argparse.ArgumentParser:
    parser = argument_parser("python -m training.cache", __doc__)
    add_config_arguments(parser, "training config whose data and encoders sections are used (shards, bucket, "
                                 "text_len, batch_size, encoder weights)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="folder for the cache shards, one per source shard and of the same name (required)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(load_config(args.config, args.overrides), args.out)


if __name__ == "__main__":
    main()
