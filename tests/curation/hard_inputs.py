"""Awkward but real video inputs for curation tests, written with PyAV and numpy only.

Every generator is ``make_NAME(folder: Path) -> Path``: it writes one small file (under a
second to make) into ``folder`` and returns its path; ``HARD_INPUTS`` maps NAME to it.

Unless said otherwise a video is 24 fps, 156 frames (6.5 s) in four shots of 36, 40, 44 and
36 frames (``SHOTS``) joined by hard cuts at frames 36, 76 and 120 (``CUTS``). Each shot is its
own coloured texture, panned smoothly and fast enough not to count as static. 6.5 s, because
the shortest scene tier (5 s = 81 frames at 16 fps) needs about 5.1 s of kept shots.

Facts measured with PyAV 18.1 / FFmpeg 8.1 are in each generator's docstring. Files are
byte-identical from run to run (x264 on one thread, Matroska bit-exact).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

FPS = 24
SHOTS = (36, 40, 44, 36)
CUTS = (36, 76, 120)
NUM_FRAMES = sum(SHOTS)


# --------------------------------------------------------------------------- frames


class _Shot:
    """A random colour field with fine detail on a canvas larger than the frame, panned to and
    fro (never jumping, so only the real cuts look like cuts)."""

    def __init__(self, seed: int, width: int, height: int) -> None:
        rng = np.random.default_rng(seed)
        self.width, self.height = width, height
        # Pan along each axis by up to half the picture; not at all across a sliver (a step of
        # a pixel there would change most of the picture at once).
        self.travel = tuple(size // 2 if size >= 16 else 0 for size in (width, height))
        canvas_w, canvas_h = width + self.travel[0], height + self.travel[1]
        coarse = rng.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
        base = cv2.resize(coarse, (canvas_w, canvas_h), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        cell = max(8, max(width, height) // 20)  # detail blobs scale with the picture
        detail = rng.integers(-50, 50, size=(max(2, canvas_h // cell), max(2, canvas_w // cell)), dtype=np.int16)
        detail = cv2.resize(detail.astype(np.float32), (canvas_w, canvas_h), interpolation=cv2.INTER_LINEAR)
        self.canvas = np.clip(base + detail[..., None], 0, 255).astype(np.uint8)
        # Up to a thirtieth of the travel per frame along each axis and at most a third of a
        # blob: fast enough not to be static, slow enough that no frame looks like a cut.
        speed = [min(t / 30, cell / 3) * rng.uniform(0.6, 1.0) * rng.choice((-1, 1)) for t in self.travel]
        self.velocity = (speed[0], speed[1])
        self.phase = rng.uniform(0, 1, size=2)

    def frame(self, t: int) -> np.ndarray:
        x = _triangle(self.velocity[0] * t + self.phase[0] * self.travel[0], self.travel[0])
        y = _triangle(self.velocity[1] * t + self.phase[1] * self.travel[1], self.travel[1])
        return self.canvas[y : y + self.height, x : x + self.width]


def _triangle(value: float, half_period: int) -> int:
    if half_period <= 0:
        return 0
    phase = value % (2 * half_period)
    return int(phase if phase <= half_period else 2 * half_period - phase)


def shot_frames(width: int, height: int, shots: Iterable[int] = SHOTS, seed: int = 0) -> Iterator[np.ndarray]:
    """RGB uint8 frames [height, width, 3]: each shot a distinct moving texture, hard cuts between."""
    for index, length in enumerate(shots):
        shot = _Shot(seed * 100 + index, width, height)
        for t in range(length):
            yield np.ascontiguousarray(shot.frame(t))


def cut_frames(shots: Iterable[int] = SHOTS) -> list[int]:
    """Frames where a new shot starts."""
    starts = np.cumsum(list(shots))[:-1]
    return [int(s) for s in starts]


# --------------------------------------------------------------------------- writing


def _write(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    *,
    codec: str = "libx264",
    fps: float = FPS,
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    format: str | None = None,
    container_options: dict[str, str] | None = None,
    rotation: int | None = None,
) -> None:
    """Encode RGB frames (all one size) with PyAV; timestamps 0, 1, 2, ... in 1/fps."""
    frames = iter(frames)
    first = next(frames)
    height, width = first.shape[:2]
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w", format=format, options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec == "libx264":
            # One thread: the same bytes on every machine (truncation and damage land alike).
            options = {"preset": "veryfast", "crf": "20", "threads": "1", **(options or {})}
        if options:
            stream.options = options
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for index, image in enumerate(_chain(first, frames)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


# Matroska writes random UIDs unless told to be bit-exact.
_BITEXACT = {"fflags": "+bitexact"}


def _x264_gop(keyint: int, bframes: int | None = None) -> dict[str, str]:
    params = f"keyint={keyint}:min-keyint={keyint}:scenecut=0"
    if bframes is not None:
        params += f":bframes={bframes}"
    return {"x264-params": params}


# --------------------------------------------------------------------------- generators


def make_extreme_aspect(folder: Path) -> Path:
    """``extreme_aspect.mp4``: H.264 (libx264, yuv420p), 2x1000 pixels (width 2, height 1000),
    156 frames at 24 fps with cuts at ``CUTS``. libx264 accepts 2x1000 (and 2x2, 1000x2) as
    long as both sizes are even; PyAV reads back width 2, height 1000, 156 frames."""
    path = Path(folder) / "extreme_aspect.mp4"
    _write(path, shot_frames(2, 1000))
    return path


NON_UTF8_NAME = b"caf\xe9.mp4"  # Latin-1 e-acute: not valid UTF-8


def make_non_utf8_name(folder: Path) -> Path:
    """``caf\\xe9.mp4``: a normal 160x90 H.264 video whose file name holds byte 0xE9, not UTF-8.

    Written under a plain name, then renamed with bytes paths. The returned Path is what
    Python's os functions give for it: the byte decodes to the lone surrogate ``'\\udce9'``
    (``os.fsdecode``), so ``str(path).encode('utf-8')`` raises UnicodeEncodeError while
    ``os.fsencode(str(path))`` gives the bytes back. PyAV opens such a str (it uses os.fsencode).
    Needs a file system that stores names as raw bytes (Linux ext4, tmpfs; not macOS APFS).
    """
    folder_bytes = os.fsencode(Path(folder))
    plain = os.path.join(folder_bytes, b"non_utf8_tmp.mp4")
    _write(os.fsdecode(plain), shot_frames(160, 90, seed=1))
    target = os.path.join(folder_bytes, NON_UTF8_NAME)
    os.replace(plain, target)
    return Path(os.fsdecode(target))


def make_glob_chars_name(folder: Path) -> Path:
    """``films [2020]/clip [1080p].mp4``: a normal 160x90 H.264 video in a folder, both names
    with glob metacharacters (``[...]`` is a character class to ``glob``/``fnmatch``)."""
    sub = Path(folder) / "films [2020]"
    sub.mkdir(parents=True, exist_ok=True)
    path = sub / "clip [1080p].mp4"
    _write(path, shot_frames(160, 90, seed=2))
    return path


def make_mjpeg_avi(folder: Path) -> Path:
    """``mjpeg.avi``: Motion-JPEG (codec ``mjpeg``, yuvj420p, qmin 2 qmax 4) in AVI, 160x90, 156 frames at
    24 fps, cuts at ``CUTS``. PyAV reads codec name ``mjpeg``, format ``avi``, 156 frames."""
    path = Path(folder) / "mjpeg.avi"
    _write(path, shot_frames(160, 90, seed=3), codec="mjpeg", pix_fmt="yuvj420p",
           options={"qmin": "2", "qmax": "4"})
    return path


def _riff_chunks(data: bytes | bytearray, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(fourcc, offset of the chunk header, size of its data) of the chunks in data[start:end]."""
    offset = start
    while offset + 8 <= end:
        fourcc, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        yield bytes(fourcc), offset, size
        offset += 8 + size + (size & 1)


def _zero_avi_counts(data: bytes) -> bytes:
    """The AVI with every stated frame count zeroed (avih dwTotalFrames, each strh dwLength, the
    OpenDML dmlh dwTotalFrames), AVIF_HASINDEX cleared and the idx1 chunk removed."""
    data = bytearray(data)
    assert data[:4] == b"RIFF" and data[8:12] == b"AVI "

    def walk(start: int, end: int) -> None:
        for fourcc, offset, size in list(_riff_chunks(data, start, end)):
            body = offset + 8
            if fourcc == b"LIST":
                walk(body + 4, body + size)
            elif fourcc == b"avih":
                flags = struct.unpack_from("<I", data, body + 12)[0]
                struct.pack_into("<I", data, body + 12, flags & ~0x30)  # HASINDEX, MUSTUSEINDEX
                struct.pack_into("<I", data, body + 16, 0)  # dwTotalFrames
            elif fourcc == b"strh":
                struct.pack_into("<I", data, body + 32, 0)  # dwLength
            elif fourcc == b"dmlh":
                struct.pack_into("<I", data, body, 0)  # dwTotalFrames

    riff_end = 8 + struct.unpack_from("<I", data, 4)[0]
    walk(12, riff_end)
    for fourcc, offset, size in list(_riff_chunks(data, 12, riff_end)):
        if fourcc == b"idx1":
            chunk_end = offset + 8 + size + (size & 1)
            del data[offset:chunk_end]
            struct.pack_into("<I", data, 4, struct.unpack_from("<I", data, 4)[0] - (chunk_end - offset))
            break
    return bytes(data)


def make_avi_zero_counts(folder: Path) -> Path:
    """``zero_counts.avi``: MPEG-4 part 2 (``mpeg4``) in AVI, 160x90, 156 frames at 24 fps, cuts at
    ``CUTS``, whose header frame counts are all 0 and which has no idx1 index.

    PyAV then reports ``stream.frames == 0``, ``stream.duration == 0`` and
    ``container.duration is None`` (nothing to estimate a frame count from), while
    ``average_rate`` is still 24; decoding still yields all 156 frames (pts 0..155).
    """
    path = Path(folder) / "zero_counts.avi"
    plain = path.with_name("zero_counts_tmp.avi")
    _write(plain, shot_frames(160, 90, seed=4), codec="mpeg4", options={"qscale": "3"})
    path.write_bytes(_zero_avi_counts(plain.read_bytes()))
    plain.unlink()
    return path


def make_mpeg2_elementary(folder: Path) -> Path:
    """``elementary.m2v``: a raw MPEG-2 video elementary stream (muxer ``mpeg2video``, no
    container), 160x90, 156 frames at 24 fps, GOP 12 with B-frames, cuts at ``CUTS``.

    PyAV (demuxer ``mpegvideo``): ``stream.frames == 0``, ``stream.duration`` and
    ``container.duration`` None, and ``stream.average_rate == 25`` (the raw demuxer's default)
    although ``base_rate``, ``guessed_rate`` and ``codec_context.framerate`` are 24, the true
    rate; time base 1/1200000, frame pts 50000, 100000, ... Decoding yields all 156 frames.

    ``.m2v`` was not in ``curation.run.VIDEO_EXTENSIONS`` at commit f6f556c;
    ``make_mpeg2_elementary_mpg`` writes the same stream under ``.mpg`` (FFmpeg probes the
    content, so it still reads as ``mpegvideo``, not MPEG-PS)."""
    path = Path(folder) / "elementary.m2v"
    _write_mpeg2_es(path)
    return path


def make_mpeg2_elementary_mpg(folder: Path) -> Path:
    """``elementary_es.mpg``: the same raw MPEG-2 elementary stream, named ``.mpg``."""
    path = Path(folder) / "elementary_es.mpg"
    _write_mpeg2_es(path)
    return path


def _write_mpeg2_es(path: Path) -> None:
    _write(path, shot_frames(160, 90, seed=5), codec="mpeg2video", format="mpeg2video",
           options={"g": "12", "bf": "2", "qscale": "3"})


CORRUPT_KEYINT = 24
CORRUPT_SHOTS = (48, 48, 48, 48)  # 192 frames, 8 s; cuts at 48, 96, 144
CORRUPT_PACKET = 100  # a P frame; packets are frames in order (no B-frames)


def _damage_packet(path: Path, packet_index: int) -> None:
    """Make packet ``packet_index``'s first NAL length prefix claim more bytes than the packet has."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        packet = packets[packet_index]
        assert not packet.is_keyframe, "damage a frame that is not a keyframe"
        position, size = packet.pos, packet.size
    data = bytearray(path.read_bytes())
    assert struct.unpack_from(">I", data, position)[0] < size
    struct.pack_into(">I", data, position, 0x00FFFFFF)
    path.write_bytes(bytes(data))


def make_corrupt_packet(folder: Path, damage: bool = True) -> Path:
    """``corrupt_packet.mp4``: H.264 160x90, 192 frames (8 s) at 24 fps in four 48-frame shots
    (cuts at 48, 96, 144), an IDR every 24 frames, no B-frames (packet i is frame i), and the
    4-byte NAL length of packet ``CORRUPT_PACKET`` (100, a P frame) overwritten with 0x00FFFFFF.

    PyAV: ``container.decode(stream)`` yields frames 0..99 and then raises
    ``av.error.InvalidDataError`` (an ``av.FFmpegError`` and ``ValueError``; errno
    1094995529 = AVERROR_INVALIDDATA; str: "[Errno 1094995529] Invalid data found when
    processing input: 'avcodec_send_packet()'"; FFmpeg logs "[h264] Invalid NAL unit size
    (16777215 > 209)" and ``exc.log`` holds ``(16, 'h264', 'Error splitting the input into NAL
    units.\n')`` only when ``av.logging.set_level(...)`` is on, else None; str(exc) then ends
    "; last error log: [h264] Error splitting the input into NAL units."). The generator is then
    finished (``next`` gives StopIteration). Decoding packet by packet (``stream.decode(packet)``
    in a try block) loses only frame 100: every later packet decodes, 191 frames in all;
    frames 101..119 carry artefacts (mean abs error ~7 against the undamaged file; they refer
    to the lost frame; ``frame.is_corrupt`` stays False) and from the IDR at 120 on they are
    exact. Counting decoded frames, every frame after 100 is then one index early.
    """
    path = Path(folder) / ("corrupt_packet.mp4" if damage else "undamaged_packet.mp4")
    _write(path, shot_frames(160, 90, CORRUPT_SHOTS, seed=6), options=_x264_gop(CORRUPT_KEYINT, bframes=0))
    if damage:  # else the same bytes undamaged, to compare against
        _damage_packet(path, CORRUPT_PACKET)
    return path


def make_truncated_faststart(folder: Path) -> Path:
    """``truncated_faststart.mp4``: H.264 160x90, 156 frames at 24 fps with cuts at ``CUTS``,
    written with ``movflags=faststart`` (moov before mdat), then cut to 60 % of its bytes.

    The moov is intact, so PyAV opens it and still states ``stream.frames == 156`` (and 6.5 s).
    Demuxing gives packets 0..77 (B-frames on, decode order); packet 77 is cut short and comes
    with ``packet.is_corrupt`` True (log: "Packet corrupt", "partial file"); decoding it raises
    ``av.error.InvalidDataError`` (same message as ``make_corrupt_packet``'s, log "[h264]
    Invalid NAL unit size"). ``container.decode(stream)`` yields 75 frames and then raises,
    losing the 2 frames still held for B-frame reordering; packet by packet with the error
    caught (and the final flush) gives 77 frames, 0..76, all exact. (Counts for this content;
    another picture moves the 60 % mark.)
    """
    path = Path(folder) / "truncated_faststart.mp4"
    _write(path, shot_frames(160, 90, seed=7), container_options={"movflags": "faststart"})
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat"), "faststart puts moov first"
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path


ROTATION = -90  # PyAV's degrees (counter-clockwise), as set_display_rotation takes and frame.rotation gives
MARKER = 24  # side of the white square in the displayed top-left corner


def displayed_from_coded(coded: np.ndarray, rotation: int) -> np.ndarray:
    """The picture a player shows for a coded picture and PyAV's rotation (counter-clockwise
    degrees, ``VideoFrame.rotation``): np.rot90 turns counter-clockwise too."""
    return np.rot90(coded, k=round(rotation / 90) % 4)


def make_rotated_phone(folder: Path) -> Path:
    """``rotated_phone.mp4``: H.264 coded 160x90 (landscape), 156 frames at 24 fps, cuts at
    ``CUTS``, with a display matrix rotating it 90 degrees clockwise, so players show it 90x160
    (portrait). This is what phones write for portrait video (old tag ``rotate=90``; the
    tkhd matrix is a=0, b=1, c=-1, d=0 in 16.16; ffprobe prints "rotation of -90.00 degrees").

    Written with ``stream.set_display_rotation(-90)`` (PyAV's angle is counter-clockwise;
    it stores av_display_rotation_set(+90 clockwise)). The stream carries it as coded side data
    (tkhd matrix); ``stream.metadata`` has no ``rotate`` key, and writing ``metadata['rotate']``
    has no effect in FFmpeg 8. Read back with ``frame.rotation == -90`` on every decoded frame
    (and ``frame.side_data['DISPLAYMATRIX']``, nine int32 in 16.16 / 2.30). PyAV 18 has no
    stream-level getter (no ``stream.side_data``, nothing on ``codec_context``): decode a
    frame. ``frame.rotation`` is ``int(av_display_rotation_get(...))``, truncated, not
    rounded; exact for multiples of 90. Decoded frames stay coded-size 160x90, and
    ``displayed_from_coded(coded, frame.rotation)`` gives the 90x160 displayed picture
    (OpenCV's VideoCapture auto-rotates the same way).

    Marker: a white ``MARKER``-pixel square in the DISPLAYED top-left corner, i.e. in the CODED
    bottom-left corner (coded rows 66..89, columns 0..23); a red square in the displayed
    top-right corner is coded top-left. Shot textures fill the rest.
    """
    path = Path(folder) / "rotated_phone.mp4"

    def frames() -> Iterator[np.ndarray]:
        for portrait in shot_frames(90, 160, seed=8):
            shown = portrait.copy()
            shown[:MARKER, :MARKER] = 255
            shown[:MARKER, -MARKER:] = (255, 0, 0)
            # coded = displayed turned back: rotation -90 shows coded turned clockwise.
            yield np.ascontiguousarray(np.rot90(shown, k=-round(ROTATION / 90) % 4))

    _write(path, frames(), rotation=ROTATION)
    return path


# --------------------------------------------------------------------------- extras


VFR_FRAME_TICKS = (3000, 3000, 6000)  # frame durations in 1/90000 s, cycled: 1/30, 1/30, 1/15 s


def make_vfr_mp4(folder: Path) -> Path:
    """``vfr.mp4``: H.264 160x90, 156 frames with cuts at ``CUTS``, variable frame rate: frame
    durations cycle 1/30, 1/30, 1/15 s (time base 1/90000), 6.93 s in all, so no single
    rate fits: PyAV states 156 frames, ``average_rate`` 520/23 (22.6 fps), stream duration 6.9 s."""
    path = Path(folder) / "vfr.mp4"
    tb = Fraction(1, 90000)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 160, 90, "yuv420p"
        stream.codec_context.time_base = tb
        stream.options = {"preset": "veryfast", "crf": "20", "threads": "1"}
        pts = 0
        for index, image in enumerate(shot_frames(160, 90, seed=9)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = pts, tb
            container.mux(stream.encode(frame))
            pts += VFR_FRAME_TICKS[index % len(VFR_FRAME_TICKS)]
        container.mux(stream.encode())
    return path


def make_h264_10bit(folder: Path) -> Path:
    """``h264_10bit.mp4``: H.264 High 10 (libx264, yuv420p10le), 160x90, 156 frames, cuts at ``CUTS``."""
    path = Path(folder) / "h264_10bit.mp4"
    _write(path, shot_frames(160, 90, seed=10), pix_fmt="yuv420p10le")
    return path


def make_hevc_10bit(folder: Path) -> Path:
    """``hevc_10bit.mp4``: HEVC Main 10 (libx265, yuv420p10le, tag hvc1), 160x90, 156 frames, cuts at ``CUTS``."""
    path = Path(folder) / "hevc_10bit.mp4"
    _write(path, shot_frames(160, 90, seed=11), codec="libx265", pix_fmt="yuv420p10le",
           options={"preset": "ultrafast", "crf": "24", "x265-params": "log-level=error"})
    return path


def make_h264_444(folder: Path) -> Path:
    """``h264_444.mp4``: H.264 High 4:4:4 Predictive (libx264, yuv444p), 160x90, 156 frames, cuts at ``CUTS``."""
    path = Path(folder) / "h264_444.mp4"
    _write(path, shot_frames(160, 90, seed=12), pix_fmt="yuv444p")
    return path


def make_vp9_webm(folder: Path) -> Path:
    """``vp9.webm``: VP9 (libvpx-vp9, yuv420p) in WebM, 160x90, 156 frames at 24 fps, cuts at
    ``CUTS``. WebM states no frame count (``stream.frames == 0``) but a duration."""
    path = Path(folder) / "vp9.webm"
    _write(path, shot_frames(160, 90, seed=13), codec="libvpx-vp9",
           options={"deadline": "realtime", "cpu-used": "8", "crf": "30", "b": "0"},
           container_options=_BITEXACT)
    return path


def make_interlaced_ts(folder: Path) -> Path:
    """``interlaced.ts``: MPEG-2 video coded interlaced (field DCT and motion estimation,
    top field first) in MPEG-TS, 160x90, 156 frames at 24 fps, cuts at ``CUTS``. Decoded frames
    have ``interlaced_frame`` set; TS states no frame count."""
    path = Path(folder) / "interlaced.ts"
    _write(path, shot_frames(160, 90, seed=14), codec="mpeg2video",
           options={"flags": "+ildct+ilme", "top": "1", "g": "12", "bf": "2", "qscale": "3"})
    return path


def make_two_video_streams(folder: Path) -> Path:
    """``two_streams.mkv``: two H.264 video streams. Stream 0 is a 64x36 preview, one texture
    (no cuts), 78 frames at 12 fps, not default; stream 1 is the 160x90 main picture, 156
    frames at 24 fps with cuts at ``CUTS``, disposition default. Both last 6.5 s.
    ``container.streams.video[0]`` is the preview."""
    path = Path(folder) / "two_streams.mkv"
    with av.open(str(path), mode="w", options=_BITEXACT) as container:
        preview = container.add_stream("libx264", rate=12)
        main = container.add_stream("libx264", rate=24)
        for stream, (w, h) in ((preview, (64, 36)), (main, (160, 90))):
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"preset": "veryfast", "crf": "20", "threads": "1"}
        preview.disposition = av.stream.Disposition(0)
        main.disposition = av.stream.Disposition.default
        preview_frames = shot_frames(64, 36, (NUM_FRAMES // 2,), seed=15)
        for index, image in enumerate(shot_frames(160, 90, seed=16)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 24)
            container.mux(main.encode(frame))
            if index % 2 == 0:
                small = av.VideoFrame.from_ndarray(next(preview_frames), format="rgb24")
                small.pts, small.time_base = index // 2, Fraction(1, 12)
                container.mux(preview.encode(small))
        container.mux(main.encode())
        container.mux(preview.encode())
    return path


PTS_WRAP = 1 << 33  # MPEG-TS timestamps are 33 bits of a 90 kHz clock
PTS_WRAP_START = PTS_WRAP - 3 * 90000  # the first frame 3 s before the wrap


def make_pts_wrap_ts(folder: Path) -> Path:
    """``pts_wrap.ts``: H.264 160x90 in MPEG-TS, 156 frames at 24 fps, cuts at ``CUTS``, whose
    timestamps start 3 s before the 33-bit PTS wrap (``PTS_WRAP_START``), so the stored values
    wrap to 0 at frame 72 (written as growing 64-bit values; the muxer keeps the low 33 bits).

    FFmpeg unwraps them on reading by making the early ones negative: ``stream.start_time ==
    -270000`` (time base 1/90000), ``container.start_time == -3000000`` us, frame pts run
    -270000, -266250, ..., 0 at frame 72, ..., 311250, in order; 156 frames."""
    path = Path(folder) / "pts_wrap.ts"
    with av.open(str(path), mode="w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 160, 90, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "20", "threads": "1"}
        tb = Fraction(1, 90000)
        stream.codec_context.time_base = tb

        def shift(packets: list[av.Packet]) -> list[av.Packet]:
            for packet in packets:
                packet.pts += PTS_WRAP_START
                packet.dts += PTS_WRAP_START
            return packets

        for index, image in enumerate(shot_frames(160, 90, seed=17)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index * 3750, tb
            container.mux(shift(stream.encode(frame)))
        container.mux(shift(stream.encode()))
    return path


HARD_INPUTS: dict[str, Callable[[Path], Path]] = {
    "extreme_aspect": make_extreme_aspect,
    "non_utf8_name": make_non_utf8_name,
    "glob_chars_name": make_glob_chars_name,
    "mjpeg_avi": make_mjpeg_avi,
    "avi_zero_counts": make_avi_zero_counts,
    "mpeg2_elementary": make_mpeg2_elementary,
    "mpeg2_elementary_mpg": make_mpeg2_elementary_mpg,
    "corrupt_packet": make_corrupt_packet,
    "truncated_faststart": make_truncated_faststart,
    "rotated_phone": make_rotated_phone,
    "vfr_mp4": make_vfr_mp4,
    "h264_10bit": make_h264_10bit,
    "hevc_10bit": make_hevc_10bit,
    "h264_444": make_h264_444,
    "vp9_webm": make_vp9_webm,
    "interlaced_ts": make_interlaced_ts,
    "two_video_streams": make_two_video_streams,
    "pts_wrap_ts": make_pts_wrap_ts,
}
