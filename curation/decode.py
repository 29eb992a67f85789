"""Frame readers that agree on FFmpeg's frame numbering.

Two decoders sit behind one small interface: PyAV (FFmpeg itself, so its sequential decode
order *is* FFmpeg's numbering; the default) and decord (on request). decord is only
used for a file after `decord_agrees_with_ffmpeg` has checked it: on some files (seen on
MPEG-2) decord's frame i is not FFmpeg's frame i, and every cut, clip and manifest must use
FFmpeg's numbering.

Readers yield RGB uint8 arrays of shape [height, width, 3].
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Protocol

import av
import numpy as np

log = logging.getLogger(__name__)


def scaled_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """Size with the given width (never wider than the source), aspect kept, both dims even."""
    target_width = min(target_width, width)
    target_height = max(2, round(height * target_width / width / 2) * 2)
    return max(2, target_width // 2 * 2), target_height


class FrameReader(Protocol):
    name: str

    def frames(self, width: int, height: int) -> Iterator[np.ndarray]:
        """Every frame in decode order, resized to width x height."""


class PyAVReader:
    name = "pyav"

    def __init__(
        self, path: str, threads: int = 1, interpolation: str = "AREA", skip_deblocking: bool = False
    ) -> None:
        self.path = path
        self.threads = threads
        self.interpolation = interpolation
        self.skip_deblocking = skip_deblocking

    def _decode(self) -> Iterator[av.VideoFrame]:
        with av.open(self.path) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = self.threads
            if self.skip_deblocking:
                # Frames decoded this way drift slightly from the true pictures until the next
                # keyframe; numbering and count do not change.
                stream.codec_context.options = {"skip_loop_filter": "all"}
            yield from container.decode(stream)

    def frames(self, width: int, height: int) -> Iterator[np.ndarray]:
        for frame in self._decode():
            yield frame.to_ndarray(width=width, height=height, format="rgb24", interpolation=self.interpolation)

    def frames_at(
        self, indices: Sequence[int], width: int, height: int
    ) -> Iterator[tuple[int, np.ndarray]]:
        # Decoding from the start is the only way to be sure of FFmpeg's numbering for any
        # file (seeking lands on timestamps, not frame numbers); callers batch their requests
        # so one pass serves all of them.
        if not indices:
            return
        wanted = iter(indices)
        target = next(wanted)
        index = -1
        for index, frame in enumerate(self._decode()):
            if index < target:
                continue
            yield index, frame.to_ndarray(width=width, height=height, format="rgb24", interpolation=self.interpolation)
            target = next(wanted, None)
            if target is None:
                return
        raise EOFError(f"{self.path}: decoded {index + 1} frames, frame {target} was requested")


class DecordReader:
    name = "decord"

    def __init__(self, path: str, threads: int = 1) -> None:
        self.path = path
        self.threads = threads

    def _open(self, width: int, height: int):
        import decord

        return decord.VideoReader(self.path, width=width, height=height, num_threads=self.threads)

    def frames(self, width: int, height: int) -> Iterator[np.ndarray]:
        reader = self._open(width, height)
        for _ in range(len(reader)):
            yield reader.next().asnumpy()


def open_reader(path: str, decoder: str, threads: int = 1, skip_deblocking: bool = False) -> FrameReader:
    """A reader for `decoder`; `skip_deblocking` applies to PyAV (decord has no such option)."""
    if decoder == "decord":
        return DecordReader(path, threads=threads)
    if decoder == "pyav":
        return PyAVReader(path, threads=threads, skip_deblocking=skip_deblocking)
    raise ValueError(f"unknown decoder {decoder!r} (expected 'pyav' or 'decord')")


def decord_agrees_with_ffmpeg(
    path: str, container_frames: int, num_checks: int = 8, window: int = 300
) -> tuple[bool, str]:
    """Whether decord numbers this file's frames as FFmpeg does, and why not if it doesn't.

    Checks that decord's frame count equals the container's and that frames spread over the
    first `window` frames look the same through both decoders (at thumbnail size, where
    scaler differences are far below the difference between neighbouring frames).
    """
    if container_frames <= 0:
        return False, "container does not state its frame count"
    try:
        decord_reader = DecordReader(path)._open(64, 36)
    except Exception as exc:  # decord raises its own DECORDError for files FFmpeg reads fine
        return False, f"decord cannot open the file: {exc}"
    if len(decord_reader) != container_frames:
        return False, f"decord counts {len(decord_reader)} frames, the container {container_frames}"
    span = min(window, container_frames)
    indices = sorted({round(i * (span - 1) / max(1, num_checks - 1)) for i in range(num_checks)})
    reference = dict(PyAVReader(path).frames_at(indices, 64, 36))
    candidates = decord_reader.get_batch(indices).asnumpy().astype(np.int16)
    for index, frame in zip(indices, candidates):
        error = np.abs(frame - reference[index]).mean()
        if error > 4.0:
            return False, f"decord frame {index} differs from FFmpeg's (mean abs error {error:.1f})"
    return True, "frame count and sampled frames agree"
