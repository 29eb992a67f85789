"""Bytes read and samples/s of the training data path, per reader and per rank, local and over S3.

    python benchmarks/data_loader.py [--layouts 1x1,1x2,2x2,4x2] [--samples 96] [--shards 3] [--no-s3]

Writes a small corpus twice, as the trainer sees it: raw clips (the pipeline's shard format, 33-frame
multi-shot H.264 clips at 64x64, decoded to the 17x64x64 bucket with the tiny tokenizer) and a latent
cache (``training.cache``'s sample format: fp32 latents [16, 5, 30, 52] and bf16 text states
[120, 4096], about 1.5 MB a sample), each in ``--shards`` shards with their sample indexes. Then for
every layout RANKSxWORKERS reads one epoch through ``ShardStream`` + ``BatchIterator`` (batch 1), rank
after rank in this process, from the local tars and from an S3-compatible server on 127.0.0.1
(``moto_server``, as the tests use). Prints, per source, data and layout: the bytes all readers read as
a multiple of the corpus (the tars' bytes; the previous design read ``readers x`` the corpus), the
smallest and largest reader's share, and samples/s per rank (from each rank's second batch on, the mean
over ranks, each rank alone on the machine: a rank's speed here, not the cluster's).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save as save_safetensors

from curation.shard_index import write_indexed_tar
from curation.shards import SampleMeta, write_shard
from curation.synthetic import make_multishot_video
from training.data import BatchIterator, SampleDecoder, ShardCatalog, ShardStream, SkipGuard, expand_shards
from training.encoders import load_tokenizer
from training.prompt import PromptTokenizer

from moto_server import MotoServer  # benchmarks/moto_server.py, beside this script

BUCKET = (17, 64, 64)
SHOTS = [[17, 16], [21, 12], [33]]


def prompt(captions: list[str]) -> str:
    return (f"[global caption] moving colour fields. This scene contains {len(captions)} shots. "
            f"[per shot caption] {' [shot cut] '.join(captions)}")


def write_raw(folder: Path, samples: int, shards: int) -> None:
    clips = folder / "clips"
    clips.mkdir(parents=True)
    made = []
    for i in range(samples):
        lengths = SHOTS[i % len(SHOTS)]
        path = clips / f"{i}.mp4"
        make_multishot_video(path, lengths, width=64, height=64, fps=16, seed=i)
        starts = [sum(lengths[:k]) for k in range(len(lengths))]
        captions = [f"shot {k} of clip {i}" for k in range(len(lengths))]
        shots = [{"start_frame": s, "end_frame": s + n, "caption": c} for s, n, c in zip(starts, lengths, captions)]
        meta = SampleMeta(key=f"clip-{i:05d}", source={"uri": str(path), "video_id": str(i), "start_s": 0.0, "end_s": 2.0},
                          fps=16, num_frames=sum(lengths), width=64, height=64, global_caption="moving colour fields.",
                          shots=shots, shot_cut_frames=starts[1:], prompt=prompt(captions))
        made.append((meta, path.read_bytes()))
    per = -(-samples // shards)
    for s in range(shards):
        write_shard(folder / f"shard-{s:06d}.tar", made[s * per:(s + 1) * per])


def write_cache(folder: Path, samples: int, shards: int) -> None:
    per = -(-samples // shards)
    generator = torch.Generator().manual_seed(0)
    for s in range(shards):
        def shard_samples(start: int = s * per):
            for i in range(start, min(start + per, samples)):
                tensors = {"latents": torch.randn(16, 5, 30, 52, generator=generator),
                           "text_states": torch.randn(120, 4096, generator=generator).bfloat16(),
                           "shot_ids": torch.tensor([0, 0, 0, 1, 1])}
                meta = {"key": f"clip-{i:05d}", "global_span": [0, 10], "shot_spans": [[10, 60], [60, 119]]}
                yield {"__key__": meta["key"], "json": json.dumps(meta).encode(),
                       "safetensors": save_safetensors(tensors)}
        write_indexed_tar(folder / f"shard-{s:06d}.tar", shard_samples())


def upload(folder: Path, bucket: str) -> str:
    import fsspec

    fs = fsspec.filesystem("s3")
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    for path in sorted(folder.glob("shard-*")):
        fs.put_file(str(path), f"{bucket}/{path.name}")
    return f"s3://{bucket}/*.tar"


def measure(pattern: str, decoder: SampleDecoder, ranks: int, workers: int) -> dict:
    catalog = ShardCatalog.load(expand_shards([pattern]))
    reader_bytes, rates, index_bytes = [], [], 0
    for rank in range(ranks):
        stream = ShardStream(catalog, decoder, rank, ranks, seed=0, shuffle_buffer=64, loop=False)
        batches = BatchIterator(stream, 1, workers, SkipGuard(100, 0.5))
        next(batches)  # from the first batch on: loader workers start once per run, not per epoch
        start, count = time.perf_counter(), 0
        for _ in batches:
            count += 1
        rates.append(count / (time.perf_counter() - start))
        reader_bytes += [batches.reader_bytes[w] for w in range(max(1, workers))]
        index_bytes += batches.index_bytes
    return {"readers": len(reader_bytes), "read": sum(reader_bytes), "min": min(reader_bytes),
            "max": max(reader_bytes), "index": index_bytes, "samples_per_s": sum(rates) / len(rates),
            "corpus": catalog.tar_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layouts", default="1x1,1x2,2x2,4x2",
                        help="RANKSxWORKERS, comma separated (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=96, help="samples per corpus (default: %(default)s)")
    parser.add_argument("--shards", type=int, default=3, help="shards per corpus (default: %(default)s)")
    parser.add_argument("--no-s3", action="store_true", help="local tars only (default: off, also moto_server)")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(1)
    layouts = [tuple(int(n) for n in layout.split("x")) for layout in args.layouts.split(",")]
    decoder = SampleDecoder(BUCKET, PromptTokenizer(load_tokenizer("tiny"), 512))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_raw(root / "raw", args.samples, args.shards)
        write_cache(root / "cache", args.samples, args.shards)
        sources = {"local": {kind: f"{root / kind}/*.tar" for kind in ("raw", "cache")}}
        server = None
        if not args.no_s3:
            server = MotoServer(root)
            os.environ.update(server.env)
            sources["s3"] = {kind: upload(root / kind, f"bench-{kind}") for kind in ("raw", "cache")}
        try:
            print(f"{args.samples} samples in {args.shards} shards per corpus; batch 1; ranks run one after another")
            print("| source | data | ranks x workers | readers | bytes read / corpus | smallest / largest reader "
                  "| index bytes (all ranks) | samples/s per rank |")
            print("| --- | --- | --- | --- | --- | --- | --- | --- |")
            for source, kinds in sources.items():
                for kind, pattern in kinds.items():
                    for ranks, workers in layouts:
                        m = measure(pattern, decoder, ranks, workers)
                        corpus = m["corpus"]
                        print(f"| {source} | {kind} | {ranks} x {workers} | {m['readers']} | {m['read'] / corpus:.3f} "
                              f"| {m['min'] / corpus:.3f} / {m['max'] / corpus:.3f} | {m['index']:,} "
                              f"| {m['samples_per_s']:.1f} |", flush=True)
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
