"""Media I/O: round trips, frame-rate resampling, rotation metadata, random access, atomic writes, audio loading."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile as sf

from difftalk.io.audio import AudioError, fit_length, load_audio, save_wav
from difftalk.io.video import FrameReader, VideoError, VideoWriter, iter_frames, probe_video, read_frames


def _counter_video(path, fps=30.0, frames=60, size=(48, 64)):
    """Frame i is a flat image whose grey level encodes i (robust to compression)."""
    with VideoWriter(path, fps=fps) as writer:
        for i in range(frames):
            writer.write(np.full((*size, 3), (i * 4) % 256, np.uint8))


def test_video_round_trip_with_audio(tmp_path):
    t = np.arange(32000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-t)).astype(np.float32)
    with VideoWriter(tmp_path / "a.mp4", fps=25, audio=audio, metadata={"comment": "hello"}) as writer:
        for i in range(50):
            writer.write(np.full((63, 65, 3), i * 5, np.uint8))  # odd sizes are padded to even
    info = probe_video(tmp_path / "a.mp4")
    assert (info.fps, info.num_frames, info.has_audio) == (25.0, 50, True)
    assert (info.width, info.height) == (66, 64)
    decoded = load_audio(tmp_path / "a.mp4")[:32000]
    lag = max(range(-200, 200), key=lambda k: float(np.dot(np.roll(decoded, -k), audio)))
    assert lag == 0 and np.corrcoef(decoded, audio)[0, 1] > 0.99


def test_resampling_to_25_fps_keeps_time(tmp_path):
    _counter_video(tmp_path / "v.mp4", fps=30, frames=60)  # 2 s
    frames = read_frames(tmp_path / "v.mp4", fps=25)
    assert len(frames) == 50
    levels = frames[:, 0, 0, 0].astype(int)
    expected = np.round(np.arange(50) / 25 * 30) * 4  # the source frame nearest to each output time
    assert np.abs(levels - expected).max() <= 6


def test_rotation_metadata_is_applied(tmp_path):
    image = np.zeros((32, 64, 3), np.uint8)
    image[:, :8] = 255  # a white band on the left of a landscape frame
    with VideoWriter(tmp_path / "plain.mp4", fps=25) as writer:
        for _ in range(3):
            writer.write(image)
    data = bytearray((tmp_path / "plain.mp4").read_bytes())
    box = data.find(b"tkhd")
    version = data[box + 4]
    matrix = box + 4 + 4 + (32 if version == 1 else 20) + 8 + 8
    # The display matrix a phone writes for a 90° clockwise display rotation.
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    (tmp_path / "rotated.mp4").write_bytes(bytes(data))
    info = probe_video(tmp_path / "rotated.mp4")
    assert (info.width, info.height) == (32, 64)
    frame = read_frames(tmp_path / "rotated.mp4")[0]
    assert frame.shape == (64, 32, 3)
    assert frame[:6].mean() > 200 and frame[-20:].mean() < 40  # the left edge is now on top


def test_frame_reader_random_access_matches_streaming(tmp_path):
    _counter_video(tmp_path / "v.mp4", fps=30, frames=90)
    frames = read_frames(tmp_path / "v.mp4", fps=25)
    reader = FrameReader(tmp_path / "v.mp4", fps=25, block=8)
    order = [*range(len(frames)), *reversed(range(len(frames))), 40, 3, 70]
    assert all(np.array_equal(reader[k], frames[k]) for k in order)
    assert len(reader._cache) <= 16  # bounded memory
    with pytest.raises(IndexError):
        reader[len(frames) + 3]


def test_frame_reader_serves_interleaved_forward_readers_without_decoding_again(tmp_path):
    """The pipeline's pattern: lanes read their stretches in step while the paste-back reads in order."""
    _counter_video(tmp_path / "v.mp4", fps=25, frames=100)
    frames = read_frames(tmp_path / "v.mp4", fps=25)
    reader = FrameReader(tmp_path / "v.mp4", fps=25, block=8, streams=5)
    starts = [0, 25, 50, 75]  # four lanes of 25 frames
    for j in range(25):
        for start in starts:
            assert np.array_equal(reader[start + j], frames[start + j])
        assert np.array_equal(reader[j], frames[j])  # the paste-back, behind
    # each lane's stretch and the paste-back's 25 frames decoded once, plus the lead-in of the three seeks (this
    # file has one keyframe, at frame 0: 25 + 50 + 75 frames)
    assert reader.decoded <= 100 + 25 + 150 + 10, reader.decoded
    # with too few streams the same reading thrashes (cursors are evicted and reopened)
    starved = FrameReader(tmp_path / "v.mp4", fps=25, block=8, streams=2)
    for j in range(25):
        for start in starts:
            assert np.array_equal(starved[start + j], frames[start + j])
    assert starved.decoded > 3 * reader.decoded


def test_writer_is_atomic(tmp_path):
    path = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError), VideoWriter(path, fps=25) as writer:
        writer.write(np.zeros((16, 16, 3), np.uint8))
        raise RuntimeError("interrupted")
    assert not path.exists() and not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="uint8"):
        VideoWriter(tmp_path / "x.mp4").write(np.zeros((16, 16, 3), np.float32))


def test_audio_loading_formats_rates_and_channels(tmp_path):
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 300 * t)], 1).astype(np.float32) * 0.5
    sf.write(tmp_path / "s.flac", stereo, 44100)
    sf.write(tmp_path / "s.ogg", stereo, 44100)
    for name in ("s.flac", "s.ogg"):
        audio = load_audio(tmp_path / name)
        assert audio.dtype == np.float32 and abs(len(audio) - 16000) <= 2 and 0.3 < np.abs(audio).max() < 0.6
    save_wav(tmp_path / "m.wav", np.zeros(800, np.float32))
    assert len(load_audio(tmp_path / "m.wav")) == 800
    assert len(fit_length(np.ones(10, np.float32), 4)) == 4 and fit_length(np.ones(2, np.float32), 4)[-1] == 0


def test_bad_media_errors(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(b"junk" * 50)
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(VideoError, match="not a readable video"):
        probe_video(tmp_path / "junk.mp4")
    with pytest.raises(VideoError):
        list(iter_frames(tmp_path / "junk.mp4"))


# --- issue 13: the output keeps the user's audio as it is ---------------------------------------------


def _audio_stream(path):
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return stream.codec_context.name, stream.codec_context.sample_rate, stream.codec_context.channels


@pytest.mark.parametrize("rate", [44100, 48000])
def test_writer_keeps_the_audio_sample_rate_and_channels(tmp_path, rate):
    from difftalk.io.audio import read_audio

    t = np.arange(rate) / rate  # 1 s
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
    with VideoWriter(tmp_path / "s.mp4", fps=25, audio=stereo, sample_rate=rate) as writer:
        for _ in range(25):
            writer.write(np.zeros((32, 32, 3), np.uint8))
    assert _audio_stream(tmp_path / "s.mp4") == ("aac", rate, 2)
    clip = read_audio(tmp_path / "s.mp4")  # decoded by PyAV
    assert (clip.sample_rate, clip.channels) == (rate, 2)
    assert abs(clip.num_samples - rate) < 0.05 * rate
    left, right = clip.samples[:, rate // 4 : rate // 2]
    assert np.corrcoef(left, right)[0, 1] < 0.5  # the two channels stay apart
    # mono stays mono; a rate AAC lacks goes to the next one up
    with VideoWriter(tmp_path / "m.mp4", fps=25, audio=stereo[0, :37000], sample_rate=37000) as writer:
        writer.write(np.zeros((32, 32, 3), np.uint8))
    assert _audio_stream(tmp_path / "m.mp4") == ("aac", 44100, 1)


def test_read_audio_keeps_what_the_file_holds_and_load_audio_mixes_it(tmp_path):
    from difftalk.io.audio import read_audio

    t = np.arange(48000) / 48000
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 300 * t), np.zeros_like(t)], 1).astype(np.float32)
    sf.write(tmp_path / "s.wav", stereo, 48000)
    clip = read_audio(tmp_path / "s.wav")
    assert (clip.channels, clip.sample_rate, clip.num_samples) == (2, 48000, 48000)
    np.testing.assert_allclose(clip.samples[0], stereo[:, 0], atol=1e-4)
    mono = load_audio(tmp_path / "s.wav")
    assert abs(len(mono) - 16000) <= 2 and 0.2 < np.abs(mono).max() < 0.3  # the channels averaged
    fitted = clip.fit_seconds(0.5)
    assert fitted.samples.shape == (2, 24000) and clip.fit_seconds(1.5).samples.shape == (2, 72000)
    assert fit_length(np.ones((2, 3), np.float32), 5).shape == (2, 5)


def test_writer_names_the_fix_for_an_output_without_a_known_extension(tmp_path):
    with pytest.raises(VideoError, match=r"name the output \.mp4"):
        VideoWriter(tmp_path / "out.notavideoformat")
