import numpy as np
import pytest

from curation.config import CurationConfig, DetectConfig, ProbeConfig
from curation.decode import PyAVReader, decord_agrees_with_ffmpeg
from curation.probe import probe_video
from curation.shots import detect_shots
from curation.synthetic import make_multishot_video


def test_probe_reads_stream_facts(bikes_path):
    info = probe_video(bikes_path)
    assert info.ok and info.error is None
    assert (info.fps, info.num_frames, info.width, info.height, info.codec) == (25.0, 250, 640, 272, "h264")
    assert info.duration_s == pytest.approx(10.0)
    assert info.decoder == "pyav"  # the default
    assert probe_video(bikes_path, ProbeConfig(decoder="decord")).decoder == "decord"  # after its check
    assert len(info.video_id) == 16 and info.video_id == probe_video(bikes_path).video_id


def test_decord_is_refused_when_its_count_differs(bikes_path):
    agrees, reason = decord_agrees_with_ffmpeg(bikes_path, container_frames=251)
    assert not agrees and "250" in reason and "251" in reason


@pytest.fixture(scope="module")
def mpeg2_pair(tmp_path_factory):
    """The same shots as H.264 in mp4 and as MPEG-2 in an MPEG program stream."""
    folder = tmp_path_factory.mktemp("mpeg2")
    paths = []
    for name, codec in [("clip.mp4", "libx264"), ("clip.mpg", "mpeg2video")]:
        make_multishot_video(folder / name, [30, 40, 35], width=320, height=180, fps=25, seed=5, codec=codec)
        paths.append(str(folder / name))
    return paths


def test_mpeg2_program_stream_falls_back_to_pyav_and_keeps_ffmpeg_numbering(mpeg2_pair):
    mp4, mpg = mpeg2_pair
    info = probe_video(mpg, ProbeConfig(decoder="decord"))
    assert info.ok and info.codec == "mpeg2video"
    assert info.decoder == "pyav"  # the container states no frame count decord could be checked against
    decoded = sum(1 for _ in PyAVReader(mpg).frames(32, 18))
    detection = detect_shots(info, DetectConfig())
    assert detection.num_frames == decoded == 105
    assert detection.cuts == detect_shots(probe_video(mp4), DetectConfig()).cuts == [30, 70]


def test_decoder_must_be_a_known_one():
    with pytest.raises(ValueError, match=r"ProbeConfig.decoder must be one of \['pyav', 'decord'\], not 'auto'"):
        CurationConfig.from_dict({"probe": {"decoder": "auto"}})


def test_skipping_deblocking_changes_pixels_not_numbering(bikes_path):
    full = np.stack(list(PyAVReader(bikes_path).frames(320, 136))).astype(np.int16)
    fast = np.stack(list(PyAVReader(bikes_path, skip_deblocking=True).frames(320, 136))).astype(np.int16)
    assert fast.shape == full.shape  # same frames, same count
    error = np.abs(fast - full).mean(axis=(1, 2, 3))
    assert error.max() > 0.1  # the option is in effect (set before the codec opens)
    assert error.max() < 4.0  # and far from changing what a frame shows
