"""WebDataset shards -> training batches.

The sample order is one global stream, the same whatever the world size: each epoch visits the
shards in a seeded order, samples pass through a seeded shuffle buffer, and the stream's sample ``g``
goes to rank ``g % world_size``; within a rank, its ``j``-th sample goes to loader worker
``j % num_workers``, and the loader returns samples in worker round-robin order. So every sample is
used once per epoch, the global batch at step ``k`` does not depend on how many ranks share it (what
makes FSDP runs comparable to one process), and a position ``(epoch, index in epoch, g, j)`` is all a
resume needs. Every worker reads all tar bytes but decodes only its own samples; decoding (video,
or latent tensors) is the cost that is split.

A sample that fails to decode comes out of the stream as a ``Skipped`` marker in its place, never
raised: the loader hands over the workers' items in turn, so a worker that dropped a sample would hand
over its next one early, and the recorded position (what a resume starts after) would no longer say
which samples were used. Consumers pass the stream through a ``SkipGuard``, which counts skips by
reason, logs each reason once and stops the run when most recent samples fail to decode.
"""

from __future__ import annotations

import glob
import itertools
import json
import logging
import random
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import fsspec
import torch
from safetensors.torch import load as load_safetensors
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset import tariterators
from webdataset.gopen import gopen_schemes
from webdataset.shardlists import expand_urls

from curation.shards import decode_sample
from holocine_model import ShotLayout

from .config import DataConfig
from .prompt import PromptTokenizer, truncate_prompt
from .video import decode_frames, fit_to_bucket

log = logging.getLogger(__name__)


def _scheme(url: str) -> str | None:
    return url.split("://", 1)[0] if "://" in url else None


def expand_shards(patterns: list[str]) -> list[str]:
    """Shard URLs from paths, globs, brace patterns and URIs, in order.

    URIs are read by webdataset (``pipe:``, ``http(s)://``, ``gs://`` ...) or, for other schemes
    (``s3://``, ``gcs://``, ``az://``, ``hf://``...), by fsspec, which also expands their globs.
    """
    urls: list[str] = []
    for pattern in patterns:
        for url in expand_urls(pattern):
            if url.startswith("pipe:") or not glob.has_magic(url):
                urls.append(url)
            elif _scheme(url):
                fs, path = fsspec.core.url_to_fs(url)
                urls.extend(sorted(fs.unstrip_protocol(p) for p in fs.glob(path)))
            else:
                urls.extend(sorted(glob.glob(url)))
    if not urls:
        raise FileNotFoundError(f"no shards match {patterns}")
    return urls


@dataclass(frozen=True)
class Position:
    """Where a sample sits in the stream: epoch, index in that epoch, global index, rank-local index."""

    epoch: int = 0
    index: int = -1
    global_index: int = -1
    local_index: int = -1

    def following(self) -> Position:
        return Position(self.epoch, self.index + 1, self.global_index + 1, self.local_index + 1)


@dataclass(frozen=True)
class Skipped:
    """A sample that failed to decode, in its place in the stream."""

    key: str
    position: Position
    reason: str  # the same for every sample that fails the same way (see skip_reason)
    error: str  # the full message


def skip_reason(exc: Exception) -> str:
    """The error's type and first line, numbers masked: frame counts, token counts and byte offsets
    differ from sample to sample, and each reason is logged once however many samples it skips."""
    first_line = str(exc).partition("\n")[0]
    return f"{type(exc).__name__}: {re.sub(r'[0-9]+', 'N', first_line)}"


class SkipGuard:
    """Counts a stream's skipped samples by reason, logs each reason once, and stops the run when more
    than ``max_fraction`` of the last ``window`` samples were skipped: the run would otherwise train on
    the few samples left (a bucket or text_len that most samples do not fit), or wait forever for one
    (a stream of which no sample decodes)."""

    def __init__(self, window: int, max_fraction: float, skipped: int = 0) -> None:
        self.recent: deque[bool] = deque(maxlen=window)
        self.max_fraction = max_fraction
        self.skipped = skipped  # in total, the runs this one resumed included
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, Skipped] = {}

    @classmethod
    def from_config(cls, data: DataConfig, skipped: int = 0) -> SkipGuard:
        return cls(data.skip_window, data.max_skipped_fraction, skipped)

    def admit(self, item: dict | Skipped) -> bool:
        """Record one item of the stream; whether it is a sample to use."""
        is_skipped = isinstance(item, Skipped)
        self.recent.append(is_skipped)
        if is_skipped:
            self._count(item)
        return not is_skipped

    def summary(self) -> str:
        return "; ".join(f"{count} x {reason} (first: {self.examples[reason].key}: {self.examples[reason].error})"
                         for reason, count in self.counts.most_common())

    def _count(self, item: Skipped) -> None:
        self.skipped += 1
        self.counts[item.reason] += 1
        if item.reason not in self.examples:
            self.examples[item.reason] = item
            log.warning("skipping sample %s: %s (%d skipped so far; samples skipped for this reason again "
                        "are counted, not logged)", item.key, item.error, self.skipped)
        recent = sum(self.recent)
        if recent > self.max_fraction * self.recent.maxlen:
            raise RuntimeError(f"{recent} of the last {len(self.recent)} samples failed to decode, more than "
                               f"data.max_skipped_fraction={self.max_fraction} of data.skip_window="
                               f"{self.recent.maxlen}: {self.summary()}")


def decoded(items: Iterable[dict | Skipped], guard: SkipGuard) -> Iterator[dict]:
    """The samples of a stream, its skipped items recorded by ``guard``."""
    return (item for item in items if guard.admit(item))


class SampleDecoder:
    """Raw webdataset sample -> training sample (tensors). Raw clips or latent-cache samples."""

    def __init__(self, bucket: tuple[int, int, int], tokenizer: PromptTokenizer) -> None:
        self.frames, self.height, self.width = bucket
        self.tokenizer = tokenizer
        self.text_len = tokenizer.text_len

    def __call__(self, raw: dict) -> dict:
        if "safetensors" in raw:
            return self._cached(raw)
        meta, mp4 = decode_sample(raw)
        if meta.num_frames < self.frames:
            raise ValueError(f"{meta.num_frames} frames, the bucket needs {self.frames}")
        cuts = [f for f in meta.shot_cut_frames if f < self.frames]
        prompt = truncate_prompt(meta.prompt, len(cuts) + 1) if len(cuts) < len(meta.shot_cut_frames) else meta.prompt
        tokens = self.tokenizer(prompt, len(cuts) + 1)
        video = fit_to_bucket(decode_frames(mp4, self.frames), self.height, self.width)
        return {
            "key": meta.key,
            "video": video,
            "input_ids": tokens.input_ids,
            "attention_mask": tokens.attention_mask,
            "shot_ids": ShotLayout.from_cut_frames(self.frames, cuts).shot_ids[0],
            "global_span": torch.tensor(tokens.global_span),
            "shot_spans": torch.tensor(tokens.shot_spans),
        }

    def _cached(self, raw: dict) -> dict:
        meta = json.loads(raw["json"])
        tensors = load_safetensors(raw["safetensors"])
        latent_frames = (self.frames - 1) // 4 + 1
        if tensors["latents"].shape[1] != latent_frames:
            raise ValueError(f"cached for {tensors['latents'].shape[1]} latent frames, the bucket has {latent_frames}")
        # The cache keeps only the prompt's tokens; pad back to text_len with zero states.
        states = tensors["text_states"].float()
        length = states.shape[0]
        if length > self.text_len:
            raise ValueError(f"cached with {length} text tokens, text_len is {self.text_len}")
        mask = torch.zeros(self.text_len, dtype=torch.long)
        mask[:length] = 1
        return {
            "key": meta["key"],
            "latents": tensors["latents"],
            "text_states": torch.cat([states, states.new_zeros(self.text_len - length, states.shape[1])]),
            "attention_mask": mask,
            "shot_ids": tensors["shot_ids"],
            "global_span": torch.tensor(meta["global_span"]),
            "shot_spans": torch.tensor(meta["shot_spans"]),
        }


class ShardStream(IterableDataset):
    """The global sample stream, this rank's share of it, split across loader workers (see module doc)."""

    def __init__(
        self,
        urls: list[str],
        decode: Callable[[dict], dict],
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle_shards: bool = True,
        shuffle_buffer: int = 0,
        resume_after: Position = Position(),
        loop: bool = True,
    ) -> None:
        self.urls = urls
        self.decode = decode
        self.rank, self.world_size = rank, world_size
        self.seed = seed
        self.shuffle_shards = shuffle_shards
        self.shuffle_buffer = shuffle_buffer
        # Iteration resumes right after `resume_after`, the last consumed position.
        self.resume_after = resume_after
        self.loop = loop

    def _epoch_samples(self, epoch: int) -> Iterator[dict]:
        urls = list(self.urls)
        if self.shuffle_shards:
            random.Random(f"{self.seed}-shards-{epoch}").shuffle(urls)
        raw = self._read(urls)
        if self.shuffle_buffer > 1:
            raw = _shuffled(raw, self.shuffle_buffer, random.Random(f"{self.seed}-samples-{epoch}"))
        return raw

    def _read(self, urls: list[str]) -> Iterator[dict]:
        for url in urls:
            try:
                yield from _tar_samples(url)
            except Exception as exc:  # a truncated or unreadable shard ends that shard, not the run
                log.warning("shard %s: %s; moving on", url, exc)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        num_workers, worker = (info.num_workers, info.id) if info else (1, 0)
        start = self.resume_after.following()
        epoch, index, g, j = start.epoch, start.index, start.global_index, start.local_index
        # Worker 0 is asked first, so it takes the next local index whatever position we resume from.
        first_local = j
        while True:
            count = 0
            for count, raw in enumerate(self._epoch_samples(epoch), start=1):
                if count - 1 < index:
                    continue
                mine = g % self.world_size == self.rank
                if mine and (j - first_local) % num_workers == worker:
                    yield self._decoded(raw, Position(epoch, index, g, j))
                index += 1
                g += 1
                j += mine
            if not self.loop:
                return
            if count == 0:
                raise RuntimeError(f"the shards hold no samples: {self.urls[:3]}…")
            epoch, index = epoch + 1, 0

    def _decoded(self, raw: dict, position: Position) -> dict | Skipped:
        try:
            sample = self.decode(raw)
        except Exception as exc:  # one bad sample must not end the run; SkipGuard judges how many do
            return Skipped(raw.get("__key__", "?"), position, skip_reason(exc), str(exc))
        sample["position"] = position
        return sample


def is_latent_cache(urls: list[str]) -> bool:
    """Whether the shards hold cached latents (``training.cache``) rather than clips, from the first sample."""
    first = next(_tar_samples(urls[0]), {})
    return "safetensors" in first


def _tar_samples(url: str) -> Iterator[dict]:
    """Samples of one tar shard: webdataset's openers for its schemes and local paths, else fsspec."""
    scheme = _scheme(url)
    if scheme is None or scheme in gopen_schemes or url.startswith("pipe:"):
        yield from tariterators.tarfile_samples([{"url": url}])
        return
    with fsspec.open(url, "rb") as stream:
        yield from tariterators.group_by_keys(tariterators.tar_file_expander([{"url": url, "stream": stream}]))


def _shuffled(items: Iterator[dict], size: int, rng: random.Random) -> Iterator[dict]:
    buffer: list[dict] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = rng.randrange(size)
        yield buffer[i]
        buffer[i] = item
    rng.shuffle(buffer)
    yield from buffer


def collate(samples: list[dict]) -> dict:
    """Stack samples of one bucket; the shot layout is built on the host, as the model wants."""
    batch: dict = {"keys": [s["key"] for s in samples]}
    for name in ("video", "latents", "input_ids", "text_states", "attention_mask"):
        if name in samples[0]:
            batch[name] = torch.stack([s[name] for s in samples])
    rows = max(len(s["shot_spans"]) for s in samples)
    shot_spans = torch.zeros(len(samples), rows, 2, dtype=torch.long)
    for b, s in enumerate(samples):
        shot_spans[b, :len(s["shot_spans"])] = s["shot_spans"]
    batch["layout"] = ShotLayout(torch.stack([s["shot_ids"] for s in samples]),
                                 torch.stack([s["global_span"] for s in samples]), shot_spans)
    batch["global_index"] = torch.tensor([s["position"].global_index for s in samples])
    return batch


def fixed_batches(urls: list[str], decode: Callable[[dict], dict], batch_size: int, num_samples: int,
                  guard: SkipGuard) -> list[dict]:
    """The first ``num_samples`` samples of the shards in stored order, as batches (a fixed set)."""
    stream = ShardStream(urls, decode, shuffle_shards=False, shuffle_buffer=0, loop=False)
    samples = list(itertools.islice(decoded(stream, guard), num_samples))
    if not samples:
        raise RuntimeError(f"no sample of the shards decodes: {guard.summary()}")
    return [collate(samples[i:i + batch_size]) for i in range(0, len(samples), batch_size)]


class BatchIterator:
    """Batches of ``batch_size`` consecutive samples of this rank's stream, with the resume position;
    the stream's skipped samples go to ``guard`` (by default one with DataConfig's window and threshold)."""

    def __init__(self, stream: ShardStream, batch_size: int, num_workers: int, guard: SkipGuard | None = None) -> None:
        self.loader = DataLoader(stream, batch_size=None, num_workers=num_workers,
                                 persistent_workers=False, prefetch_factor=4 if num_workers else None)
        self.batch_size = batch_size
        self.guard = guard or SkipGuard.from_config(DataConfig())
        self.position = stream.resume_after
        self._it = iter(self.loader)

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> dict:
        samples = []
        while len(samples) < self.batch_size:
            item = next(self._it)
            # A skipped sample is consumed too: a resumed stream starts after it.
            self.position = item.position if isinstance(item, Skipped) else item["position"]
            if self.guard.admit(item):
                samples.append(item)
        return collate(samples)
