"""WebDataset shards -> training batches, each reader reading only the bytes of the samples it decodes.

The sample order is one global stream, the same whatever the world size: each epoch visits the
shards in a seeded order, samples pass through a seeded shuffle buffer, and the stream's sample ``g``
goes to rank ``g % world_size``; within a rank, its ``j``-th sample goes to loader worker
``j % num_workers``, and the loader returns samples in worker round-robin order. So every sample is
used once per epoch, the global batch at step ``k`` does not depend on how many ranks share it (what
makes FSDP runs comparable to one process), and a position ``(epoch, index in epoch, g, j)`` is all a
resume needs.

The order is computed from each shard's sample index (``curation.shard_index``: key, byte offset and
length of every sample), which every rank loads once; the buffer shuffles locations, not bytes. A
loader worker then reads the byte range of each of its own samples (a seek, or an fsspec range
request) and nothing else, so the bytes read per epoch across all ranks and workers are the corpus's
once, whatever the world size. Shards without a matching index are scanned (tar headers only).

A sample that fails to read or decode comes out of the stream as a ``Skipped`` marker in its place,
never raised: the loader hands over the workers' items in turn, so a worker that dropped a sample would
hand over its next one early, and the recorded position (what a resume starts after) would no longer
say which samples were used. Consumers pass the stream through a ``SkipGuard``, which counts skips by
reason, logs each reason once and stops the run when most recent samples fail to decode.
"""

from __future__ import annotations

import glob
import itertools
import json
import logging
import queue
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import fsspec
import torch
from safetensors.torch import load as load_safetensors
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.shardlists import expand_urls

from curation.shard_index import LoadedIndex, ShardIndex, load_index, read_range, samples_in
from curation.shards import decode_sample
from holocine_model import ShotLayout

from .config import DataConfig
from .prompt import PromptTokenizer, truncate_prompt
from .video import decode_frames, fit_to_bucket

log = logging.getLogger(__name__)
T = TypeVar("T")


def _scheme(url: str) -> str | None:
    return url.split("://", 1)[0] if "://" in url else None


def expand_shards(patterns: list[str]) -> list[str]:
    """Shard URLs from paths, globs, brace patterns and URIs, in order.

    URIs (``s3://``, ``gs://``, ``az://``, ``http(s)://``, ``hf://``...) are read by byte range through
    fsspec, which also expands their globs. ``pipe:`` URLs cannot be read by range: readers refuse them.
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


def resplit_position(positions: list[Position]) -> Position:
    """Where every rank of a new world size resumes, from the positions the ranks of another one saved:
    right after the furthest of them. The stream's order does not depend on the world size, so the rest
    of the epoch is re-split over the new ranks and no sample is repeated. A rank that had skipped fewer
    samples than the furthest one had not yet reached some of its samples: those are not used this epoch
    (none when no sample was skipped). Rank-local indexes start again at 0."""
    furthest = max(positions, key=lambda p: p.global_index)
    return Position(furthest.epoch, furthest.index, furthest.global_index, -1)


@dataclass(frozen=True)
class Skipped:
    """A sample that failed to decode, in its place in the stream."""

    key: str
    position: Position
    reason: str  # the same for every sample that fails the same way (see skip_reason)
    error: str  # the full message
    bytes_read: int = 0
    reader: int = 0  # the loader worker that read it


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
        # The cache keeps only the prompt's tokens; pad back to text_len with zero states. They stay in the
        # cache's dtype (bf16 from GPU encoders) up to the device, which casts them: half the bytes to move.
        states = tensors["text_states"]
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


@dataclass(frozen=True)
class ShardCatalog:
    """Every readable shard with its sample index: what a reader needs to find its samples' bytes
    without reading anyone else's. Loaded once per rank (indexes, in parallel), before the loader
    workers start, which inherit it."""

    urls: tuple[str, ...]
    indexes: tuple[ShardIndex, ...]
    bytes_read: int  # loading it: the index files, and the headers of shards scanned for want of one

    @classmethod
    def load(cls, urls: list[str], threads: int = 16) -> ShardCatalog:
        def one(url: str) -> LoadedIndex | None:
            try:
                return load_index(url)
            except Exception as exc:  # an unreadable shard is left out, not the run
                log.warning("shard %s: %s; leaving it out", url, exc)
                return None

        with ThreadPoolExecutor(max(1, min(threads, len(urls)))) as pool:
            loaded = list(pool.map(one, urls))
        scanned = [url for url, item in zip(urls, loaded) if item is not None and item.scanned]
        if scanned:
            log.warning("%d of %d shards (first: %s) have no index that matches the tar; their headers were "
                        "scanned instead, once per rank and run. `python -m curation.shard_index SHARD...` writes "
                        "their indexes", len(scanned), len(urls), scanned[0])
        kept = [(url, item) for url, item in zip(urls, loaded) if item is not None]
        return cls(tuple(url for url, _ in kept), tuple(item.index for _, item in kept),
                   sum(item.bytes_read for item in loaded if item is not None))

    @property
    def num_samples(self) -> int:
        return sum(len(index) for index in self.indexes)

    @property
    def tar_bytes(self) -> int:
        return sum(index.tar_bytes for index in self.indexes)

    def read(self, shard: int, sample: int) -> tuple[dict, int]:
        """The raw webdataset sample and the bytes read to get it: its byte range only."""
        url, index = self.urls[shard], self.indexes[shard]
        data = read_range(url, index.offsets[sample], index.sizes[sample])
        found = list(samples_in(data, url))
        if len(found) != 1 or found[0]["__key__"] != index.keys[sample]:
            got = [s["__key__"] for s in found]
            raise ValueError(f"{url} at byte {index.offsets[sample]}: expected sample {index.keys[sample]}, found "
                             f"{got} ({len(data)} of {index.sizes[sample]} bytes): truncated tar or stale index")
        return found[0], len(data)


class ShardStream(IterableDataset):
    """The global sample stream, this rank's share of it, split across loader workers (see module doc).

    The stream's order is computed from the shard indexes alone; a worker reads the byte ranges of its
    own samples only."""

    def __init__(
        self,
        urls: list[str] | ShardCatalog,
        decode: Callable[[dict], dict],
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle_shards: bool = True,
        shuffle_buffer: int = 0,
        resume_after: Position = Position(),
        loop: bool = True,
    ) -> None:
        self.catalog = urls if isinstance(urls, ShardCatalog) else ShardCatalog.load(urls)
        self.decode = decode
        self.rank, self.world_size = rank, world_size
        self.seed = seed
        self.shuffle_shards = shuffle_shards
        self.shuffle_buffer = shuffle_buffer
        # Iteration resumes right after `resume_after`, the last consumed position.
        self.resume_after = resume_after
        self.loop = loop

    def epoch_order(self, epoch: int) -> Iterator[tuple[int, int]]:
        """(shard, sample) of each position of an epoch: shards in a seeded order, samples in tar order
        through a seeded shuffle buffer. The buffer holds locations, not samples, so its size costs no I/O."""
        shards = list(range(len(self.catalog.urls)))
        if self.shuffle_shards:
            random.Random(f"{self.seed}-shards-{epoch}").shuffle(shards)
        order: Iterator[tuple[int, int]] = ((s, i) for s in shards for i in range(len(self.catalog.indexes[s])))
        if self.shuffle_buffer > 1:
            order = _shuffled(order, self.shuffle_buffer, random.Random(f"{self.seed}-samples-{epoch}"))
        return order

    def __iter__(self) -> Iterator[dict | Skipped]:
        info = get_worker_info()
        num_workers, worker = (info.num_workers, info.id) if info else (1, 0)
        if self.catalog.num_samples == 0:
            if self.loop:
                raise RuntimeError(f"the shards hold no samples: {list(self.catalog.urls[:3])}…")
            return
        start = self.resume_after.following()
        epoch, index, g, j = start.epoch, start.index, start.global_index, start.local_index
        # Worker 0 is asked first, so it takes the next local index whatever position we resume from.
        first_local = j
        while True:
            for shard, sample in itertools.islice(self.epoch_order(epoch), index, None):
                mine = g % self.world_size == self.rank
                if mine and (j - first_local) % num_workers == worker:
                    yield self._read(shard, sample, Position(epoch, index, g, j), worker)
                index += 1
                g += 1
                j += mine
            if not self.loop:
                return
            epoch, index = epoch + 1, 0

    def _read(self, shard: int, sample: int, position: Position, worker: int) -> dict | Skipped:
        bytes_read = 0
        try:
            raw, bytes_read = self.catalog.read(shard, sample)
            decoded_sample = self.decode(raw)
        except Exception as exc:  # one bad sample must not end the run; SkipGuard judges how many do
            key = self.catalog.indexes[shard].keys[sample]
            return Skipped(key, position, skip_reason(exc), str(exc), bytes_read, worker)
        decoded_sample["position"] = position
        decoded_sample["read"] = (worker, bytes_read)
        return decoded_sample


def is_latent_cache(catalog: ShardCatalog) -> bool:
    """Whether the shards hold cached latents (``training.cache``) rather than clips, from the first sample."""
    shard = next((s for s, index in enumerate(catalog.indexes) if len(index)), None)
    return shard is not None and "safetensors" in catalog.read(shard, 0)[0]


def _shuffled(items: Iterator[T], size: int, rng: random.Random) -> Iterator[T]:
    buffer: list[T] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = rng.randrange(size)
        yield buffer[i]
        buffer[i] = item
    rng.shuffle(buffer)
    yield from buffer


def _stack(tensors: list[torch.Tensor], pin: bool) -> torch.Tensor:
    if not pin:
        return torch.stack(tensors)
    # Stacked straight into page-locked memory: the host-to-device copy can then run asynchronously.
    out = torch.empty((len(tensors), *tensors[0].shape), dtype=tensors[0].dtype, pin_memory=True)
    return torch.stack(tensors, out=out)


def collate(samples: list[dict], pin_memory: bool = False) -> dict:
    """Stack samples of one bucket; the shot layout is built on the host, as the model wants."""
    batch: dict = {"keys": [s["key"] for s in samples]}
    for name in ("video", "latents", "input_ids", "text_states", "attention_mask"):
        if name in samples[0]:
            batch[name] = _stack([s[name] for s in samples], pin_memory)
    rows = max(len(s["shot_spans"]) for s in samples)
    shot_spans = torch.zeros(len(samples), rows, 2, dtype=torch.long)
    for b, s in enumerate(samples):
        shot_spans[b, :len(s["shot_spans"])] = s["shot_spans"]
    batch["layout"] = ShotLayout(torch.stack([s["shot_ids"] for s in samples]),
                                 torch.stack([s["global_span"] for s in samples]), shot_spans)
    batch["global_index"] = torch.tensor([s["position"].global_index for s in samples])
    return batch


def fixed_batches(urls: list[str] | ShardCatalog, decode: Callable[[dict], dict], batch_size: int, num_samples: int,
                  guard: SkipGuard) -> list[dict]:
    """The first ``num_samples`` samples of the shards in stored order, as batches (a fixed set)."""
    stream = ShardStream(urls, decode, shuffle_shards=False, shuffle_buffer=0, loop=False)
    samples = list(itertools.islice(decoded(stream, guard), num_samples))
    if not samples:
        raise RuntimeError(f"no sample of the shards decodes: {guard.summary()}")
    return [collate(samples[i:i + batch_size]) for i in range(0, len(samples), batch_size)]


@dataclass(frozen=True)
class Handover:
    """What a batch consumed of the stream: where a resume starts after it, the skip count including it,
    and the bytes each loader worker read for its samples (skipped ones included)."""

    position: Position
    skipped: int
    samples: int
    reads: tuple[tuple[int, int], ...]  # (worker, bytes)


def _next_batch(items: Iterator[dict | Skipped], batch_size: int, guard: SkipGuard,
                pin_memory: bool) -> tuple[dict, Handover]:
    samples, reads, position = [], [], None
    while len(samples) < batch_size:
        item = next(items)
        # A skipped sample is consumed too: a resumed stream starts after it.
        position = item.position if isinstance(item, Skipped) else item["position"]
        reads.append((item.reader, item.bytes_read) if isinstance(item, Skipped) else item["read"])
        if guard.admit(item):
            samples.append(item)
    return collate(samples, pin_memory), Handover(position, guard.skipped, len(reads), tuple(reads))


def _fill(items: Iterator[dict | Skipped], batch_size: int, guard: SkipGuard, pin_memory: bool,
          out: queue.Queue, stop: threading.Event) -> None:
    """The prefetch thread: batches of ``items`` (collated, pinned, their shot layout built) into ``out``,
    then the exception that ended the stream (StopIteration included), until ``stop`` is set."""
    try:
        while not stop.is_set():
            _put(out, _next_batch(items, batch_size, guard, pin_memory), stop)
    except BaseException as exc:  # handed to the consumer, in order
        _put(out, exc, stop)


def _put(out: queue.Queue, value: object, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out.put(value, timeout=0.1)
            return
        except queue.Full:
            continue


class BatchIterator:
    """Batches of ``batch_size`` consecutive samples of this rank's stream, with the resume position;
    the stream's skipped samples go to ``guard`` (by default one with DataConfig's window and threshold).

    A background thread keeps ``prefetch`` batches ready (collated, their shot layout built, in pinned
    memory with ``pin_memory``), so the training step waits only when the loader workers fall behind;
    ``prefetch=0`` forms each batch in ``__next__``. The resume position, skip count and read statistics
    are those of the batches handed over, never of prefetched ones; ``guard`` itself has also seen the
    prefetched batches' samples."""

    def __init__(self, stream: ShardStream, batch_size: int, num_workers: int, guard: SkipGuard | None = None,
                 pin_memory: bool = False, prefetch: int = 2) -> None:
        loader = DataLoader(stream, batch_size=None, num_workers=num_workers,
                            persistent_workers=False, prefetch_factor=4 if num_workers else None)
        self.batch_size = batch_size
        self.guard = guard or SkipGuard.from_config(DataConfig())
        self.position = stream.resume_after
        self.skipped = self.guard.skipped
        self.samples = 0  # stream items handed over, skipped ones included
        self.index_bytes = stream.catalog.bytes_read  # this rank's catalog: index files, scanned headers
        self.reader_bytes: Counter[int] = Counter()  # loader worker -> bytes of the samples it read
        self.wait_s = 0.0  # time __next__ waited for a batch
        self._pin_memory = pin_memory
        self._items: Iterator[dict | Skipped] | None = None
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        if prefetch < 1:  # batches formed in __next__, on the caller's thread
            self._items = iter(loader)
            return
        self._queue = queue.Queue(maxsize=prefetch)
        # The thread holds the loader, not this object: dropping the iterator stops it and its workers.
        args = (iter(loader), batch_size, self.guard, pin_memory, self._queue, self._stop)
        self._thread = threading.Thread(target=_fill, args=args, daemon=True, name="batch-prefetch")
        self._thread.start()

    @property
    def bytes_read(self) -> int:
        return self.index_bytes + sum(self.reader_bytes.values())

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> dict:
        start = time.perf_counter()
        if self._queue is None:
            value = _next_batch(self._items, self.batch_size, self.guard, self._pin_memory)
        else:
            value = self._queue.get()
            if isinstance(value, BaseException):
                self._queue.put(value)  # every later call raises it too
                raise value
        self.wait_s += time.perf_counter() - start
        batch, handover = value
        self.position, self.skipped = handover.position, handover.skipped
        self.samples += handover.samples
        for worker, count in handover.reads:
            self.reader_bytes[worker] += count
        return batch

    def close(self, timeout_s: float = 60.0) -> None:
        """Stop prefetching and wait for the thread to let go of the loader: a thread still decoding
        while the interpreter shuts down can crash it."""
        self._stop.set()
        if self._queue is not None:
            self._thread.join(timeout_s)

    def __del__(self) -> None:
        self._stop.set()
