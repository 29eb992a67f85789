"""H.264 encoding with PyAV (FFmpeg's libx264, bundled in PyAV's wheels)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.frame import PictureType


class VideoWriter:
    """Streams frames into a video file; use as a context manager.

    `write` takes RGB arrays; `write_frame` takes decoded frames already in the stream's pixel
    format and size (no colour conversion) and can force a frame to be an IDR or a P frame.
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: float,
        codec: str = "libx264",
        crf: int = 18,
        preset: str = "veryfast",
        pix_fmt: str = "yuv420p",
        threads: int = 0,
        container_format: str | None = None,
    ) -> None:
        self.path = str(path)
        # The format comes from the extension unless named (temporary names have none).
        self._container = av.open(self.path, mode="w", format=container_format)
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream(codec, rate=rate)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, pix_fmt
        if codec == "libx264":
            # forced-idr: a frame forced to be a keyframe is an IDR, so nothing after it refers back.
            # threads=0 lets x264 decide.
            self._stream.options = {"crf": str(crf), "preset": preset, "forced-idr": "1", "threads": str(threads)}
        self._time_base = Fraction(1) / rate
        self.frames_written = 0

    def write(self, image: np.ndarray) -> None:
        self.write_frame(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24"))

    def write_frame(self, frame: av.VideoFrame, force: str | None = None) -> None:
        """Encode one frame; force="I" makes it an IDR frame, force="P" a P frame (no later
        frame is then needed to decode it or anything before it)."""
        frame.pts, frame.time_base = self.frames_written, self._time_base
        frame.pict_type = {"I": PictureType.I, "P": PictureType.P, None: PictureType.NONE}[force]
        self._container.mux(self._stream.encode(frame))
        self.frames_written += 1

    def close(self) -> None:
        if self._container is not None:
            self._container.mux(self._stream.encode())  # flush delayed frames
            self._container.close()
            self._container = None

    def abort(self) -> None:
        """Close without flushing and remove the partial file."""
        if self._container is not None:
            self._container.close()
            self._container = None
        Path(self.path).unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
