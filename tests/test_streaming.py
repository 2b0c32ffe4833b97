"""Streaming: audio in chunks gives the same features and frames as the whole file, frames come as soon as
they are made, memory does not follow the stream's length, and the MP4 carries the streamed audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from difftalk.config import load_config, replace
from difftalk.io.audio import SAMPLE_RATE, load_audio, save_wav
from difftalk.io.video import probe_video, read_frames
from difftalk.models.difftalk import DiffTalkModel
from difftalk.pipeline import DiffTalkPipeline, GenerateOptions
from difftalk.pipeline.base import prepare_driving_audio
from difftalk.pipeline.streaming import MARGIN_FRAMES, StreamingAudio, read_chunks
from tests.fakes import astronaut_video


def _speech(seconds: float, seed: int = 0) -> np.ndarray:
    """Syllable-like bursts with pauses (so the silence rule is exercised)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    carrier = np.sin(2 * np.pi * 180 * t) + 0.3 * rng.standard_normal(t.size)
    return (0.3 * carrier * (np.sin(2 * np.pi * 1.7 * t) > 0.2)).astype(np.float32)


def _chunks(audio: np.ndarray, seed: int = 0):
    rng = np.random.default_rng(seed)
    position = 0
    while position < audio.size:
        size = int(rng.integers(50, 4000))
        yield audio[position : position + size]
        position += size


class _Track:
    num_frames, is_image = 30, False


@pytest.mark.parametrize("seconds", [0.23, 2.71])
def test_streamed_features_equal_the_whole_files(seconds):
    audio = _speech(seconds)
    options = GenerateOptions()
    whole = prepare_driving_audio(audio, _Track(), "mel", options)  # type: ignore[arg-type]
    stream = StreamingAudio(_chunks(audio), _Track.num_frames, "mel", options)
    times = np.arange(whole.num_frames)
    assert stream.has_frame(whole.num_frames - 1) and not stream.has_frame(whole.num_frames)
    assert stream.num_frames == whole.num_frames
    np.testing.assert_array_equal(stream.windows(times, 17), whole.windows(times, 17))
    assert [stream.source(int(t)) for t in times] == whole.source_index.tolist()


def test_a_stream_keeps_only_what_the_loop_still_needs():
    audio = _speech(20.0)
    stream = StreamingAudio(_chunks(audio), 1, "mel", GenerateOptions())
    peaks = []
    for t in range(0, 500, 4):
        assert stream.has_frame(t)
        stream.windows(np.array([t]), 17)
        stream.release(t, 17)
        stream.audio_until(t)
        peaks.append((len(stream._features), len(stream._audio)))
    assert max(f for f, _ in peaks) <= 8 + 2 * MARGIN_FRAMES + 8 and max(a for _, a in peaks) < 2 * SAMPLE_RATE
    assert sum(stream.audio_until(500).size for _ in range(1)) > 0
    with pytest.raises(RuntimeError, match="released"):
        stream.windows(np.array([10]), 17)


def test_only_mel_features_stream():
    with pytest.raises(ValueError, match="mel audio features"):
        StreamingAudio(iter([]), 1, "whisper", GenerateOptions())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    torch.manual_seed(0)
    model = replace(load_config("tiny").model, {"unet.zero_init": False})
    DiffTalkModel(model).save_pretrained(root / "model", feature_backend="mel", sampler_steps=3)
    astronaut_video(root / "face.mp4", seconds=0.6)
    save_wav(root / "speech.wav", _speech(1.3))
    return root


def test_streamed_frames_equal_the_whole_files_and_come_one_by_one(setup):
    pipe = DiffTalkPipeline.from_pretrained(setup / "model")
    options = GenerateOptions(num_steps=2, progress=False, watermark=False)
    pipe.set_source(setup / "face.mp4", options)
    audio = load_audio(setup / "speech.wav")
    driving = prepare_driving_audio(audio, pipe.track(), "mel", options)
    whole = [frame for frame, _ in pipe.iter_frames(driving, options)]
    pulled = []

    def counted():
        for chunk in _chunks(audio, seed=3):
            pulled.append(chunk.size)
            yield chunk

    streamed = []
    for item in pipe.stream(counted(), options):
        streamed.append(item)
        if item.index == 0:  # the first frame needed only its own audio context, not the whole stream
            assert sum(pulled) < (1 + 8 + MARGIN_FRAMES + 4) * SAMPLE_RATE // 25 + 4000
    frames = round(audio.size / 640)
    assert len(streamed) == len(whole) == frames == 32
    for item, frame in zip(streamed, whole, strict=True):
        np.testing.assert_array_equal(item.image, frame)
    np.testing.assert_array_equal(np.concatenate([s.audio for s in streamed]), audio[: frames * 640])


def test_stream_to_file_writes_the_frames_and_the_streamed_audio(setup, tmp_path):
    pipe = DiffTalkPipeline.from_pretrained(setup / "model")
    options = GenerateOptions(num_steps=2, progress=False)
    pipe.set_source(setup / "face.mp4", options)
    result = pipe.stream_to_file(read_chunks(setup / "speech.wav", seconds=0.1), tmp_path / "live.mp4", options)
    info = probe_video(result.output)
    assert result.num_frames == 32 and info.num_frames == 32 and 0 < result.first_frame_seconds < result.seconds
    assert info.has_audio and abs(len(load_audio(result.output)) / SAMPLE_RATE - 32 / 25) < 0.1
    assert read_frames(result.output).shape[0] == 32


def test_read_chunks_resamples_files_and_reads_raw_pcm_from_stdin(tmp_path, monkeypatch):
    import io
    import sys

    import soundfile

    t = np.arange(44100) / 44100
    soundfile.write(tmp_path / "a.wav", np.stack([np.sin(2 * np.pi * 440 * t)] * 2, 1).astype(np.float32), 44100)
    chunks = list(read_chunks(tmp_path / "a.wav", seconds=0.1))
    assert len(chunks) > 5 and abs(sum(c.size for c in chunks) - SAMPLE_RATE) <= 32
    pcm = (np.full(1000, 0.5) * 32767).astype("<i2").tobytes()
    monkeypatch.setattr(sys, "stdin", type("S", (), {"buffer": io.BytesIO(pcm)})())
    raw = np.concatenate(list(read_chunks("-", seconds=0.01)))
    assert raw.size == 1000 and np.allclose(raw, 0.5, atol=1e-3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        next(read_chunks(tmp_path / "missing.wav"))


def test_stream_command_reads_pcm_on_stdin_and_writes_raw_frames_to_stdout(setup, monkeypatch, capsysbinary):
    import io
    import sys

    from difftalk.cli import main

    pcm = (np.clip(_speech(0.5), -1, 1) * 32767).astype("<i2").tobytes()
    monkeypatch.setattr(sys, "stdin", type("S", (), {"buffer": io.BytesIO(pcm)})())
    argv = ["stream", "--source", str(setup / "face.mp4"), "--audio", "-", "-o", "-"]
    assert main([*argv, "--checkpoint", str(setup / "model"), "--steps", "2", "--device", "cpu"]) == 0
    raw = capsysbinary.readouterr().out
    frames = np.frombuffer(raw, np.uint8).reshape(-1, 480, 640, 3)
    assert frames.shape[0] == 12 and frames.std() > 10  # 0.5 s at 25 fps, real pictures


def test_stream_command_writes_an_mp4_from_a_file(setup, tmp_path):
    from difftalk.cli import main

    out = tmp_path / "live.mp4"
    argv = ["stream", "--source", str(setup / "face.mp4"), "--audio", str(setup / "speech.wav"), "-o", str(out)]
    assert main([*argv, "--checkpoint", str(setup / "model"), "--steps", "2", "--no-progress"]) == 0
    assert probe_video(out).num_frames == 32


def test_stream_command_defaults_to_the_shipped_one_step_student(setup, tmp_path, monkeypatch):
    from difftalk.cli import main
    from difftalk.demo import DEMO_STUDENT
    from difftalk.pipeline import DiffTalkPipeline

    opened = []
    original = DiffTalkPipeline.from_pretrained.__func__

    def spy(cls, directory, *args, **kwargs):
        opened.append(Path(directory))
        return original(cls, setup / "model", *args, **kwargs)  # the tiny model stands in for the speed

    monkeypatch.setattr(DiffTalkPipeline, "from_pretrained", classmethod(spy))
    argv = ["stream", "--source", str(setup / "face.mp4"), "--audio", str(setup / "speech.wav")]
    assert main([*argv, "-o", str(tmp_path / "live.mp4"), "--steps", "2", "--no-progress"]) == 0
    assert opened == [DEMO_STUDENT]
