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
from dataclasses import dataclass, field
from typing import Protocol

import av
import numpy as np

log = logging.getLogger(__name__)


def scaled_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """Size with the given width (never wider than the source), aspect kept, both dims even."""
    target_width = min(target_width, width)
    target_height = max(2, round(height * target_width / width / 2) * 2)
    return max(2, target_width // 2 * 2), target_height


@dataclass
class DecodeReport:
    """What went wrong in one decode pass. Frame indices count the frames the pass output."""

    # (index of the next frame output, FFmpeg's message) for each packet the decoder rejected.
    errors: list[tuple[int, str]] = field(default_factory=list)
    # Half-open runs of frames that may show lost data: from a rejected packet to the next
    # keyframe (later frames predict from the lost one), and frames FFmpeg flags as corrupt.
    # Where the frame after a rejected packet is a whole keyframe, the run is that one frame,
    # so that no shot or scene joins pictures across the missing one.
    damaged: list[tuple[int, int]] = field(default_factory=list)
    # Why the pass stopped before the end of the stream (a truncated or broken container).
    ended_early: str | None = None


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The input's main video stream, as FFmpeg picks it (a file may also hold a small preview
    or a cover picture before it). Raises IndexError when there is none."""
    stream = container.streams.best("video")
    if stream is None:
        raise IndexError("no video stream")
    return stream


def ffmpeg_reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def decode_video(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, report: DecodeReport
) -> Iterator[av.VideoFrame]:
    """Every frame FFmpeg can decode, in decode order, past damaged data, as the ffmpeg command
    does: a packet the decoder rejects is skipped and logged and decoding goes on; a demuxer
    error (a truncated file) ends the pass. Numbering stays FFmpeg's: the i-th frame output."""
    index, damage_start = 0, None
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.FFmpegError as exc:
            report.ended_early = f"the container breaks off after frame {index}: {ffmpeg_reason(exc)}"
            break
        try:
            frames = stream.decode(packet)
        except av.FFmpegError as exc:
            report.errors.append((index, ffmpeg_reason(exc)))
            damage_start = index if damage_start is None else damage_start
            continue
        for frame in frames:
            if damage_start is not None and frame.key_frame:
                # The first whole picture after lost data ends the run; when the run would be
                # empty it takes this frame, so the gap still ends a shot.
                report.damaged.append((damage_start, max(index, damage_start + 1)))
                damage_start = None
            if frame.is_corrupt and damage_start is None:
                damage_start = index
            yield frame
            index += 1
    if damage_start is not None and damage_start < index:
        report.damaged.append((damage_start, index))


def to_rgb(frame: av.VideoFrame, width: int, height: int, rotation: int, interpolation: str = "AREA") -> np.ndarray:
    """The frame as displayed (turned ``rotation`` degrees counter-clockwise, as the stream's
    display matrix says), resized to width x height, RGB."""
    turns = rotation // 90 % 4
    if turns % 2:  # the decoded picture lies on its side: scale it to the transposed size
        width, height = height, width
    rgb = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation=interpolation)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


class FrameReader(Protocol):
    name: str
    report: DecodeReport

    def frames(self, width: int, height: int) -> Iterator[np.ndarray]:
        """Every frame in decode order, as displayed, resized to width x height."""


class PyAVReader:
    name = "pyav"

    def __init__(
        self,
        path: str,
        threads: int = 1,
        interpolation: str = "AREA",
        skip_deblocking: bool = False,
        rotation: int = 0,
    ) -> None:
        self.path = path
        self.threads = threads
        self.interpolation = interpolation
        self.skip_deblocking = skip_deblocking
        self.rotation = rotation
        self.report = DecodeReport()

    def _decode(self) -> Iterator[av.VideoFrame]:
        self.report = DecodeReport()
        with av.open(self.path) as container:
            stream = video_stream(container)
            stream.codec_context.thread_count = self.threads
            if self.skip_deblocking:
                # Frames decoded this way drift slightly from the true pictures until the next
                # keyframe; numbering and count do not change.
                stream.codec_context.options = {"skip_loop_filter": "all"}
            yield from decode_video(container, stream, self.report)

    def frames(self, width: int, height: int) -> Iterator[np.ndarray]:
        for frame in self._decode():
            yield to_rgb(frame, width, height, self.rotation, self.interpolation)

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
            yield index, to_rgb(frame, width, height, self.rotation, self.interpolation)
            target = next(wanted, None)
            if target is None:
                return
        raise EOFError(f"{self.path}: decoded {index + 1} frames, frame {target} was requested")


class DecordReader:
    name = "decord"

    def __init__(self, path: str, threads: int = 1) -> None:
        self.path = path
        self.threads = threads
        self.report = DecodeReport()  # decord reports no decode errors

    def _open(self, width: int, height: int):
        import decord

        return decord.VideoReader(self.path, width=width, height=height, num_threads=self.threads)

    def frames(self, width: int, height: int) -> Iterator[np.ndarray]:
        reader = self._open(width, height)
        for _ in range(len(reader)):
            yield reader.next().asnumpy()


def open_reader(
    path: str, decoder: str, threads: int = 1, skip_deblocking: bool = False, rotation: int = 0
) -> FrameReader:
    """A reader for `decoder`; `skip_deblocking` and `rotation` apply to PyAV (probe only
    chooses decord for files without rotation)."""
    if decoder == "decord":
        return DecordReader(path, threads=threads)
    if decoder == "pyav":
        return PyAVReader(path, threads=threads, skip_deblocking=skip_deblocking, rotation=rotation)
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
