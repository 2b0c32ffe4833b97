"""Generation end to end with a tiny model: dubbing and portrait modes, paste-back, durations, audio,
watermark after re-encoding, and every kind of bad input (a message, never a traceback or a partial file)."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from difftalk.cli import main
from difftalk.config import load_config, replace
from difftalk.data.masks import mouth_mask
from difftalk.io.audio import load_audio, save_wav
from difftalk.io.video import VideoWriter, probe_video, read_frames
from difftalk.io.watermark import verify_file
from difftalk.models.difftalk import DiffTalkModel
from difftalk.pipeline import DiffTalkPipeline, GenerateOptions
from difftalk.pipeline.colour import colour_correction
from difftalk.pipeline.generate import silent_frames
from difftalk.pipeline.paste import feathered_mask, paste_back
from difftalk.pipeline.source import source_indices
from difftalk.preprocess.crop import crop_box, frame_to_crop
from tests.fakes import astronaut_video, face_landmarks

HAS_DLIB = (
    importlib.util.find_spec("dlib") is not None and importlib.util.find_spec("face_recognition_models") is not None
)
needs_dlib = pytest.mark.skipif(not HAS_DLIB, reason="needs the difftalk[face] extra")
FAST = {"num_steps": 2, "progress": False}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model"
    model = replace(load_config("tiny").model, {"unet.zero_init": False})  # random, but sensitive to every input
    DiffTalkModel(model).save_pretrained(path, feature_backend="mel", sampler_steps=3)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    astronaut_video(root / "face.mp4", seconds=1.0)
    t = np.arange(int(1.7 * 22050)) / 22050
    stereo = (
        np.stack([np.sin(2 * np.pi * 200 * t), np.sin(2 * np.pi * 300 * t)], 1)
        * (np.sin(2 * np.pi * 2 * t) > 0)[:, None]
    )
    import soundfile as sf

    sf.write(root / "speech.flac", (0.3 * stereo).astype(np.float32), 22050)  # 1.7 s, stereo, 22.05 kHz
    cv2.imwrite(str(root / "photo.png"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    return root


def test_paste_back_leaves_everything_outside_the_mouth_untouched():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    points = face_landmarks(200, 0.7) + np.array([100.0, 40.0], np.float32)
    box = crop_box(points)
    size = 64
    crop = np.full((size, size, 3), 255, np.uint8)
    weight = feathered_mask(mouth_mask(frame_to_crop(points, box, size), size), 4)
    out = paste_back(frame, crop, box, weight)
    changed = np.any(out != frame, axis=2)
    assert changed.any()
    # Every changed pixel lies inside the mouth region (mapped back to the frame).
    hard = mouth_mask(frame_to_crop(points, box, size), size)
    inverse = cv2.warpAffine(
        hard, np.array([[(box[2] - box[0]) / size, 0, box[0]], [0, (box[3] - box[1]) / size, box[1]]]), (400, 300)
    )
    assert np.all(inverse[changed] > 0)
    assert weight.max() == 1.0 and np.all(weight[hard == 0] == 0)


def test_source_indices_loop_forwards_and_backwards():
    assert source_indices(4, 10, "pingpong").tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert source_indices(4, 6, "loop").tolist() == [0, 1, 2, 3, 0, 1]
    assert source_indices(10, 3).tolist() == [0, 1, 2]
    assert source_indices(1, 3).tolist() == [0, 0, 0]


def test_silent_frames_are_detected():
    audio = np.zeros(16000, np.float32)
    audio[8000:] = 0.2 * np.sin(np.arange(8000) / 5)
    silent = silent_frames(audio, 25, -45.0)
    assert silent[:12].all() and not silent[13:].any()


@needs_dlib
def test_dubbing_writes_an_mp4_with_audio_of_the_right_length(checkpoint, media, tmp_path):
    pipe = DiffTalkPipeline.from_pretrained(checkpoint)
    track = pipe.set_reference(media / "face.mp4", GenerateOptions(progress=False))
    assert track.num_frames == 25 and track.found.all()
    result = pipe.generate(media / "speech.flac", tmp_path / "out.mp4", GenerateOptions(**FAST))
    info = probe_video(result.output)
    assert info.has_audio and (info.width, info.height) == (640, 480)
    assert abs(info.num_frames / 25 - 1.7) <= 1 / 25  # the video (25 frames) was looped to the audio
    audio = load_audio(result.output)
    assert abs(len(audio) / 16000 - 1.7) < 0.1
    frames = read_frames(result.output)
    source = read_frames(media / "face.mp4", fps=25)
    # The face moves with the source video; far from the mouth the output equals the source (up to codecs).
    assert np.abs(frames[5, :100].astype(int) - source[5, :100].astype(int)).mean() < 4
    assert result.generated_frames == info.num_frames
    verified = verify_file(result.output)
    assert verified.watermark.found and verified.provenance is not None


@needs_dlib
def test_watermark_survives_reencoding(checkpoint, media, tmp_path):
    pipe = DiffTalkPipeline.from_pretrained(checkpoint)
    out = pipe(media / "face.mp4", media / "speech.flac", tmp_path / "out.mp4", **FAST).output
    with VideoWriter(tmp_path / "reencoded.mp4", fps=25, crf=28) as writer:
        for frame in read_frames(out):
            writer.write(cv2.resize(frame, (480, 360), interpolation=cv2.INTER_AREA))
    result = verify_file(tmp_path / "reencoded.mp4")
    assert result.watermark.found and result.provenance is None  # metadata gone, watermark still there
    clean = verify_file(media / "face.mp4")
    assert not clean.watermark.found


@needs_dlib
def test_portrait_mode_and_progressive_reference_switch(checkpoint, media, tmp_path):
    pipe = DiffTalkPipeline.from_pretrained(checkpoint)
    pipe.set_reference(media / "photo.png", GenerateOptions(progress=False))
    a = pipe.generate(media / "speech.flac", tmp_path / "a.mp4", GenerateOptions(**FAST))
    b = pipe.generate(media / "speech.flac", tmp_path / "b.mp4", GenerateOptions(progressive_reference=False, **FAST))
    assert probe_video(a.output).num_frames == probe_video(b.output).num_frames == round(1.7 * 25)
    frames_a, frames_b = read_frames(a.output), read_frames(b.output)
    assert frames_a.shape[1:3] == (512, 512)
    assert not np.array_equal(frames_a[-1], frames_b[-1])  # the reference chain changes later frames


@needs_dlib
def test_faceless_frames_pass_through_and_video_length_option(checkpoint, tmp_path):
    face = data.astronaut()[0:400, 50:450]
    with VideoWriter(tmp_path / "mixed.mp4", fps=25) as writer:
        for i in range(20):
            canvas = np.full((480, 640, 3), 90, np.uint8)
            if not 8 <= i < 12:
                canvas[40:440, 100:500] = face
            writer.write(canvas)
    save_wav(tmp_path / "short.wav", np.zeros(8000, np.float32))  # 0.5 s of silence
    pipe = DiffTalkPipeline.from_pretrained(checkpoint)
    pipe.set_reference(tmp_path / "mixed.mp4", GenerateOptions(progress=False))
    result = pipe.generate(tmp_path / "short.wav", tmp_path / "out.mp4", GenerateOptions(length="video", **FAST))
    assert result.num_frames == 20 and result.generated_frames == 16
    out, source = read_frames(result.output), read_frames(tmp_path / "mixed.mp4")
    assert np.abs(out[9].astype(int) - source[9].astype(int)).mean() < 2  # passed through (watermark + codec)


def _fails(args, caplog, message, output):
    caplog.clear()
    assert main(args) == 2
    assert message in caplog.text, caplog.text
    assert "Traceback" not in caplog.text
    assert not output.exists() and not list(output.parent.glob(".*partial*"))


@needs_dlib
def test_bad_inputs_give_clear_messages(checkpoint, media, tmp_path, caplog):
    out = tmp_path / "out.mp4"
    base = ["generate", "--checkpoint", str(checkpoint), "-o", str(out), "--steps", "1", "--no-progress"]
    ref, speech = ["--reference", str(media / "face.mp4")], ["--audio", str(media / "speech.flac")]
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x01garbage" * 100)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    save_wav(tmp_path / "speech.wav", np.zeros(1600, np.float32))
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((300, 300, 3), 128, np.uint8))
    (tmp_path / "not_a_ckpt").mkdir()
    _fails([*base, "--reference", str(tmp_path / "corrupt.mp4"), *speech], caplog, "not a readable video", out)
    _fails([*base, "--reference", str(tmp_path / "missing.mp4"), *speech], caplog, "does not exist", out)
    _fails([*base, "--reference", str(tmp_path / "speech.wav"), *speech], caplog, "no video stream", out)
    _fails([*base, *ref, "--audio", str(tmp_path / "empty.wav")], caplog, "empty", out)
    _fails([*base, *ref, "--audio", str(tmp_path / "corrupt.wav")], caplog, "not a readable media file", out)
    _fails(
        [*base, *ref, "--audio", str(media / "face.mp4").replace("face", "face")[:-4] + "_none.mp4"],
        caplog,
        "does not exist",
        out,
    )
    video_only = tmp_path / "video_only.mp4"
    with VideoWriter(video_only, fps=25) as writer:
        writer.write(np.zeros((64, 64, 3), np.uint8))
    _fails([*base, *ref, "--audio", str(video_only)], caplog, "no audio track", out)
    _fails([*base, "--reference", str(blank), *speech], caplog, "no face found", out)
    bad_ckpt = ["generate", "--checkpoint", str(tmp_path / "not_a_ckpt"), "-o", str(out), *ref, *speech]
    _fails(bad_ckpt, caplog, "not a difftalk checkpoint", out)


@needs_dlib
def test_odd_but_valid_inputs_give_valid_outputs(checkpoint, media, tmp_path):
    pipe = DiffTalkPipeline.from_pretrained(checkpoint)
    # A one-frame video is a photo.
    with VideoWriter(tmp_path / "one.mp4", fps=25) as writer:
        writer.write(np.ascontiguousarray(data.astronaut()[0:400, 50:450]))
    noise = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)  # non-speech audio
    result = pipe(tmp_path / "one.mp4", noise, tmp_path / "one_out.mp4", **FAST)
    assert result.num_frames == 25 and probe_video(result.output).has_audio
    # Several faces: the more prominent one is lip-synced, and the run succeeds.
    crop = data.astronaut()[0:400, 50:450]
    big = cv2.resize(crop, (520, 520), interpolation=cv2.INTER_CUBIC)  # face ≈ 117 px
    with VideoWriter(tmp_path / "two.mp4", fps=25) as writer:
        for _ in range(8):
            canvas = np.full((540, 960, 3), 90, np.uint8)
            canvas[10:530, 20:540] = big
            canvas[70:470, 550:950] = crop  # face ≈ 90 px
            writer.write(canvas)
    track = pipe.set_reference(tmp_path / "two.mp4", GenerateOptions(progress=False))
    centres = (track.boxes[:, 0] + track.boxes[:, 2]) / 2
    assert track.found.all() and (centres < 540).all()
    assert pipe.generate(noise[:4000], tmp_path / "two_out.mp4", GenerateOptions(**FAST)).generated_frames == 6
    # A huge photo is downscaled, not refused.
    huge = np.full((8000, 8000, 3), 200, np.uint8)
    huge[2000:6000, 2000:6000] = cv2.resize(data.astronaut(), (4000, 4000))
    cv2.imwrite(str(tmp_path / "huge.jpg"), cv2.cvtColor(huge, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
    result = pipe(tmp_path / "huge.jpg", np.zeros(4000, np.float32), tmp_path / "huge.mp4", max_side=768, **FAST)
    assert probe_video(result.output).width == 768


def _colour_scene(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two smooth ``(3, size, size)`` crops, their mouth masks and the x coordinate grid in [-1, 1]."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    crops = torch.stack([0.5 * xx, 0.3 * yy, 0.2 * xx * yy])[None].repeat(2, 1, 1, 1)
    masks = torch.zeros(2, 1, size, size)
    masks[:, :, 30:56, 16:48] = 1  # a mouth box like data.masks'
    return crops, masks, xx


def test_colour_correction_removes_a_smooth_cast_without_reading_the_mouth():
    generator = torch.Generator().manual_seed(0)
    size = 64
    crops, masks, xx = _colour_scene(size)
    cast = torch.tensor([0.2, -0.15, 0.1]).view(1, 3, 1, 1) + 0.05 * xx  # smooth colour error of the decoder
    reconstructions = crops + cast + 0.01 * torch.randn(crops.shape, generator=generator)
    correction = colour_correction(crops, reconstructions, masks, sigma=0.1 * size)
    inside = masks.expand_as(crops).bool()
    # generated mouths carry the same cast; the correction takes it off inside the mask
    error = (correction + cast.expand_as(crops))[inside].abs()
    assert float(error.mean()) < 0.02 and float(error.max()) < 0.06
    # the mouth pixels of the input never matter
    changed = crops.clone()
    changed[inside] = torch.rand(int(inside.sum()), generator=generator)
    torch.testing.assert_close(colour_correction(changed, reconstructions, masks, 0.1 * size), correction)
    with pytest.raises(ValueError, match="shapes"):
        colour_correction(crops, reconstructions[:, :2], masks, 6.0)


def test_colour_correction_takes_the_cast_inside_the_mask_from_the_reference():
    """A cast that differs under the mask (a neck among background) is missed by the fill, not with the reference."""
    generator = torch.Generator().manual_seed(0)
    size = 64
    crops, masks, _ = _colour_scene(size)
    neck = torch.zeros(1, 1, size, size)
    neck[:, :, 34:60, 22:42] = 1  # mostly under the mask
    neck = torch.nn.functional.avg_pool2d(neck, 3, stride=1, padding=1)
    background_cast = torch.tensor([0.2, -0.15, 0.1]).view(1, 3, 1, 1)
    neck_cast = torch.tensor([-0.2, 0.2, 0.0]).view(1, 3, 1, 1)
    cast = background_cast + (neck_cast - background_cast) * neck
    reconstructions = crops + cast + 0.01 * torch.randn(crops.shape, generator=generator)
    # the reference: the same face, its own reconstruction error known everywhere (plus its own mouth's detail)
    reference_residual = -cast + 0.05 * torch.randn((1, 3, size, size), generator=generator)
    inside = masks.expand_as(crops).bool()

    def error(correction: torch.Tensor) -> float:
        return float((correction + cast.expand_as(crops))[inside].abs().mean())

    assert error(colour_correction(crops, reconstructions, masks, 0.1 * size)) > 0.08
    anchored = colour_correction(crops, reconstructions, masks, 0.1 * size, reference_residual)
    assert error(anchored) < 0.05
    changed = crops.clone()
    changed[inside] = torch.rand(int(inside.sum()), generator=generator)
    torch.testing.assert_close(
        colour_correction(changed, reconstructions, masks, 0.1 * size, reference_residual), anchored
    )
    with pytest.raises(ValueError, match="reference_residual"):
        colour_correction(crops, reconstructions, masks, 6.0, reference_residual[:, :, :32])


def test_shared_noise_keeps_the_mouth_still_where_the_conditions_do_not_change(checkpoint, media):
    """Silent speech, a photo and a fixed reference: every frame has the same conditions, so with one z_T
    for the whole video the frames are identical, while a new z_T per frame makes the mouth flicker."""
    from difftalk.pipeline.base import prepare_driving_audio

    pipe = DiffTalkPipeline.from_pretrained(checkpoint)
    pipe.set_reference(media / "photo.png", GenerateOptions(progress=False))
    flicker = {}
    for noise in ("independent", "shared"):
        options = GenerateOptions(noise=noise, progressive_reference=False, temporal_smoothing=0.0, **FAST)
        driving = prepare_driving_audio(np.zeros(8000, np.float32), pipe.track(), pipe.feature_backend, options)
        frames = np.stack([frame for frame, _ in pipe.iter_frames(driving, options)]).astype(np.float32)
        flicker[noise] = float(np.abs(np.diff(frames, axis=0)).max())
    assert flicker["shared"] == 0.0 and flicker["independent"] > 5, flicker


def test_progressive_reference_chains_generated_latents_in_every_lane(checkpoint, media, monkeypatch):
    """Frame t's reference is the latent generated for frame t − 1 of its lane (never a decoded and
    re-encoded crop); across super-chunks lane 0 continues from the frame just before it and lanes 1+
    from their own last frame; only the very first frame of each lane starts from the fixed reference."""
    from difftalk.pipeline.base import prepare_driving_audio

    pipe = DiffTalkPipeline.from_pretrained(checkpoint)
    pipe.set_reference(media / "photo.png", GenerateOptions(progress=False))
    calls = []
    original = DiffTalkPipeline._generate_batch

    def spy(self, items, references, *args, **kwargs):
        crops, latents = original(self, items, references, *args, **kwargs)
        calls.append(([it["t"] for it in items], references.clone(), latents.clone()))
        return crops, latents

    monkeypatch.setattr(DiffTalkPipeline, "_generate_batch", spy)
    lanes, chunk = 2, 3
    options = GenerateOptions(lanes=lanes, chunk=chunk, **FAST)
    driving = prepare_driving_audio(np.zeros(16000, np.float32), pipe.track(), pipe.feature_backend, options)
    frames = list(pipe.iter_frames(driving, options))
    assert len(frames) == driving.num_frames == 25
    generated = {t: latent for ts, _, latents in calls for t, latent in zip(ts, latents, strict=True)}
    span = lanes * chunk
    starts = []
    for ts, references, _ in calls:
        for t, reference in zip(ts, references, strict=True):
            base, offset = divmod(t, span)
            lane, j = divmod(offset, chunk)
            if j > 0:
                expected = generated[t - 1]
            elif base == 0:
                starts.append(reference)
                continue
            elif lane == 0:
                expected = generated[t - 1]
            else:
                expected = generated[t - span + chunk - 1]
            assert torch.equal(reference, expected), t
    assert len(starts) == lanes and torch.equal(starts[0], starts[1])  # the fixed reference's latent
    assert not any(torch.equal(starts[0], latent) for latent in generated.values())
