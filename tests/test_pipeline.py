"""Generation end to end with a tiny model: dubbing and portrait modes, paste-back, durations, audio,
watermark after re-encoding, and every kind of bad input (a message, never a traceback or a partial file)."""

from __future__ import annotations

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
from tests.helpers import needs_dlib

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
    # hold: a 2-frame gap inside speech is not a pause; a long pause is, except its frames near speech
    speech = np.tile(0.2 * np.sin(np.arange(16000) / 5).astype(np.float32), 2)  # 2 s = 50 frames
    speech[int(0.4 * 16000) : int(0.48 * 16000)] = 0  # frames 10-11
    speech[int(1.0 * 16000) : int(1.6 * 16000)] = 0  # frames 25-39
    plain, held = silent_frames(speech, 50, -45.0), silent_frames(speech, 50, -45.0, hold=4)
    assert plain[10:12].any() and not held[:20].any()
    assert held[30:35].all() and not held[25:29].any() and not held[36:].any() and held.sum() < plain.sum()


@needs_dlib
def test_dubbing_writes_an_mp4_with_audio_of_the_right_length(checkpoint, media, tmp_path):
    pipe = DiffTalkPipeline.from_pretrained(checkpoint)
    track = pipe.set_source(media / "face.mp4", GenerateOptions(progress=False))
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
    pipe.set_source(media / "photo.png", GenerateOptions(progress=False))
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
    pipe.set_source(tmp_path / "mixed.mp4", GenerateOptions(progress=False))
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
    ref, speech = ["--source", str(media / "face.mp4")], ["--audio", str(media / "speech.flac")]
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x01garbage" * 100)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    save_wav(tmp_path / "speech.wav", np.zeros(1600, np.float32))
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((300, 300, 3), 128, np.uint8))
    (tmp_path / "not_a_ckpt").mkdir()
    _fails([*base, "--source", str(tmp_path / "corrupt.mp4"), *speech], caplog, "not a readable video", out)
    _fails([*base, "--source", str(tmp_path / "missing.mp4"), *speech], caplog, "does not exist", out)
    _fails([*base, "--source", str(tmp_path / "speech.wav"), *speech], caplog, "no video stream", out)
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
    _fails([*base, "--source", str(blank), *speech], caplog, "no face found", out)
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
    track = pipe.set_source(tmp_path / "two.mp4", GenerateOptions(progress=False))
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
    pipe.set_source(media / "photo.png", GenerateOptions(progress=False))
    flicker = {}
    for noise in ("independent", "shared"):
        options = GenerateOptions(noise=noise, progressive_reference=False, temporal_smoothing=0.0, **FAST)
        driving = prepare_driving_audio(np.zeros(8000, np.float32), pipe.track(), pipe.feature_backend, options)
        frames = np.stack([frame for frame, _ in pipe.iter_frames(driving, options)]).astype(np.float32)
        flicker[noise] = float(np.abs(np.diff(frames, axis=0)).max())
    assert flicker["shared"] == 0.0 and flicker["independent"] > 5, flicker


@needs_dlib
def test_source_frames_are_prepared_once(checkpoint, media, monkeypatch):
    """A 1 s video (25 source frames) dubbed with 1.7 s of speech loops forwards and backwards: each source
    frame's crop is encoded (and its reconstruction decoded for the colour fix) once, the looped frames and
    a second ``generate`` reuse them — one decode per generated frame is left — and the frames are exactly
    those of preparing every crop every time."""
    from difftalk.pipeline.base import prepare_driving_audio
    from difftalk.pipeline.generate import SourceCache

    pipe = DiffTalkPipeline.from_pretrained(checkpoint)
    track = pipe.set_source(media / "face.mp4", GenerateOptions(progress=False))
    calls: dict[str, list[int]] = {"encode_frames": [], "decode_latents": []}
    # every decode counts: whole crops, the reference's (recording the window decode's statistics), windows
    methods = {"encode_frames": "encode_frames", "decode_latents": "decode_latents"}
    methods |= {"decode_latents_recording_norms": "decode_latents", "decode_latents_window": "decode_latents"}
    for name, kind in methods.items():
        method, log = getattr(pipe.model, name), calls[kind]
        wrapped = lambda x, *rest, method=method, log=log: (log.append(len(x)), method(x, *rest))[1]  # noqa: E731
        monkeypatch.setattr(pipe.model, name, wrapped)
    options = GenerateOptions(progressive_reference=False, **FAST)
    per_frame = 2 if pipe.model.config.masked_target == "pixel" else 1  # (pixel: the blacked-out crop too)
    speech = 0.3 * np.sin(2 * np.pi * 220 * np.arange(int(1.7 * 16000)) / 16000).astype(np.float32)

    def frames() -> np.ndarray:
        for log in calls.values():
            log.clear()
        driving = prepare_driving_audio(speech, pipe.track(), pipe.feature_backend, options)
        return np.stack([frame for frame, _ in pipe.iter_frames(driving, options)])

    cached = frames()
    faces = int(np.sum(track.found))
    generated = sum(bool(track.found[i]) for i in _looped(25, 42))
    assert len(cached) == 42 > len(track.found) == 25 and faces > 20
    # the fixed reference (once, also for its reconstruction), then every source frame with a face once
    assert sum(calls["encode_frames"]) == 1 + per_frame * faces
    assert sum(calls["decode_latents"]) == 1 + faces + generated
    assert np.array_equal(frames(), cached)  # again: only the fixed reference, and one decode per frame
    assert sum(calls["encode_frames"]) == 1 and sum(calls["decode_latents"]) == 1 + generated
    pipe.source_cache = SourceCache(budget_mb=0)  # nothing kept: every crop prepared every time
    assert np.array_equal(frames(), cached)
    assert sum(calls["encode_frames"]) == 1 + per_frame * generated
    assert sum(calls["decode_latents"]) == 1 + 2 * generated


def _looped(num_source: int, num_frames: int) -> list[int]:
    """The source frame of each output frame of a video looped forwards and backwards."""
    return [int(i) for i in source_indices(num_source, num_frames, "pingpong")]


@pytest.mark.parametrize("update", ["composite", "latent"])
def test_progressive_reference_chains_every_lane(checkpoint, media, monkeypatch, update):
    """Frame t's reference is what frame t − 1 of its lane passed on (the encoded real crop with the generated
    mouth pasted in, or the generated latent); across super-chunks lane 0 continues from the frame just
    before it and lanes 1+ from their own last frame; only each lane's very first frame starts from the
    fixed reference."""
    from difftalk.pipeline.base import prepare_driving_audio

    pipe = DiffTalkPipeline.from_pretrained(checkpoint)
    pipe.set_source(media / "photo.png", GenerateOptions(progress=False))
    calls = []
    original = DiffTalkPipeline._generate_batch

    lanes, chunk = 2, 3
    span = lanes * chunk

    def spy(self, items, sources, references, *args, **kwargs):
        crops, latents = original(self, items, sources, references, *args, **kwargs)
        base, j = divmod(len(calls), chunk)  # the photo has a face in every frame: one call per (super-chunk, j)
        ts = [t for t in (base * span + lane * chunk + j for lane in range(lanes)) if t < 25]
        assert len(ts) == len(items)
        calls.append((ts, references.clone(), latents.clone()))
        return crops, latents

    monkeypatch.setattr(DiffTalkPipeline, "_generate_batch", spy)
    options = GenerateOptions(lanes=lanes, chunk=chunk, reference_update=update, **FAST)
    driving = prepare_driving_audio(np.zeros(16000, np.float32), pipe.track(), pipe.feature_backend, options)
    frames = list(pipe.iter_frames(driving, options))
    assert len(frames) == driving.num_frames == 25
    generated = {t: latent for ts, _, latents in calls for t, latent in zip(ts, latents, strict=True)}
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


# --- issue 13: paste-back on the lower face only, the user's audio kept, folder outputs, hub ids ------


def _fill(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    image = np.zeros(shape, np.uint8)
    cv2.fillPoly(image, [np.round(points).astype(np.int32)], 1)
    return image


def test_paste_weight_covers_only_the_lower_face_and_all_of_the_lips():
    from difftalk.pipeline.paste import JAW_TRAVEL, paste_weight
    from difftalk.preprocess.landmarks import CHIN, JAW, NOSE_BOTTOM, OUTER_LIPS

    size = 128
    kernel = np.ones((3, 3), np.uint8)
    for opening in (0.0, 0.5, 1.0):
        points = face_landmarks(size, opening)
        weight = paste_weight(points, size, 0.06)
        assert weight.dtype == np.float32 and weight.shape == (size, size)
        lips = _fill(points[list(OUTER_LIPS)], (size, size))
        assert np.all(weight[lips > 0] == 1.0)  # the whole mouth at full weight
        assert np.all(weight[mouth_mask(points, size) == 0] == 0)  # never outside what the model inpainted
        # the jaw line, lowered by JAW_TRAVEL so that a generated mouth opening wider than the original is not cut
        jaw = points[list(JAW)] + np.array([0.0, JAW_TRAVEL * size])
        chin = jaw[CHIN - JAW[0]]
        face = np.maximum(_fill(points[list(JAW)], (size, size)), _fill(jaw, (size, size)))
        face = cv2.dilate(face, kernel)  # the face below the ears, with a band of JAW_TRAVEL below the chin
        assert np.all(weight[face == 0] == 0)  # nothing outside the face (background, neck, clothes)
        assert not weight[int(np.ceil(chin[1])) + 2 :].any()  # nothing below the (lowered) chin
        assert not weight[: int(points[list(NOSE_BOTTOM), 1].min()) - 4].any()  # nothing above the nose
        assert weight[int(points[CHIN, 1]) + 1, int(points[CHIN, 0])] > 0  # just below the original chin: pasted
        # just outside the lowered jaw line, along its outward normal, nothing either
        for k in range(4, 13):
            tangent = jaw[k + 1 - JAW[0]] - jaw[k - 1 - JAW[0]]
            normal = np.array([-tangent[1], tangent[0]]) / np.linalg.norm(tangent)
            if normal[1] < 0:
                normal = -normal
            x, y = np.round(jaw[k - JAW[0]] + 3 * normal).astype(int)
            if 0 <= y < size:
                assert weight[y, x] == 0, k
        assert 0 < weight[int(chin[1]) - 2, int(chin[0])] < 1  # soft inside the chin
    hard = paste_weight(face_landmarks(size, 0.5), size, 0.0)
    assert set(np.unique(hard)) == {0.0, 1.0}


@needs_dlib
def test_generated_frames_change_nothing_outside_the_lower_face(checkpoint, media):
    from difftalk.pipeline.base import prepare_driving_audio
    from difftalk.pipeline.paste import JAW_TRAVEL
    from difftalk.preprocess.landmarks import JAW

    pipe = DiffTalkPipeline.from_pretrained(checkpoint)
    track = pipe.set_source(media / "photo.png", GenerateOptions(progress=False))
    assert track.still is not None
    options = GenerateOptions(temporal_smoothing=0.0, **FAST)
    driving = prepare_driving_audio(np.zeros(3200, np.float32), track, pipe.feature_backend, options)
    crop_pixel = int(np.ceil((track.boxes[0][2] - track.boxes[0][0]) / pipe.model.config.autoencoder.image_size))
    tolerance = np.ones((2 * crop_pixel + 1, 2 * crop_pixel + 1), np.uint8)  # rasterising the jaw polygon twice
    crop_size = pipe.model.config.autoencoder.image_size
    travel = JAW_TRAVEL * crop_size * crop_pixel  # the lowered jaw line, in frame pixels (upper bound)
    points = track.landmarks[0][list(JAW)]
    face = np.maximum(
        _fill(points, track.still.shape[:2]), _fill(points + np.array([0.0, travel]), track.still.shape[:2])
    )
    face = cv2.dilate(face, tolerance)
    for frame, generated in pipe.iter_frames(driving, options):
        changed = np.any(frame != track.still, axis=2)
        assert generated and changed.any()
        assert not changed[face == 0].any()  # neck, clothes and background are the source's, bit for bit


def test_output_path_of_a_folder_or_a_name_without_extension(tmp_path):
    from difftalk.pipeline.base import resolve_output_path

    (tmp_path / "existing").mkdir()
    reference, speech = tmp_path / "face.mp4", tmp_path / "speech.m4a"
    expected = tmp_path / "existing" / "face_speech.mp4"
    assert resolve_output_path(tmp_path / "existing", reference, speech) == expected
    assert resolve_output_path(f"{tmp_path}/new/", reference, speech) == tmp_path / "new" / "face_speech.mp4"
    assert resolve_output_path(tmp_path / "out", reference, speech) == tmp_path / "out.mp4"
    assert resolve_output_path(tmp_path / "out.mov", reference, speech) == tmp_path / "out.mov"
    assert resolve_output_path(str(tmp_path / "existing"), reference, np.zeros(9)).name == "face_audio.mp4"


def _write_m4a(path, samples: np.ndarray, rate: int) -> None:
    """``samples`` ``(C, N)`` float32 as an AAC .m4a (what phones record)."""
    import av

    layout = {1: "mono", 2: "stereo"}[len(samples)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = layout
        for start in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[:, start : start + 1024]), format="fltp", layout=layout
            )
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@needs_dlib
def test_output_keeps_the_speech_files_rate_and_channels_and_folder_outputs_get_a_name(checkpoint, media, tmp_path):
    import av

    from difftalk.io.audio import read_audio

    rate = 48000
    t = np.arange(int(0.6 * rate)) / rate
    stereo = 0.3 * np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)]).astype(np.float32)
    _write_m4a(tmp_path / "speech48.m4a", stereo, rate)
    args = ["generate", "--source", str(media / "photo.png"), "--audio", str(tmp_path / "speech48.m4a")]
    args += ["--checkpoint", str(checkpoint), "--steps", "2", "--device", "cpu", "--no-progress"]
    assert main([*args, "-o", f"{tmp_path / 'out'}/"]) == 0
    output = tmp_path / "out" / "photo_speech48.mp4"
    with av.open(str(output)) as container:
        context = container.streams.audio[0].codec_context
        assert (context.name, context.sample_rate, context.channels) == ("aac", rate, 2)
    num_frames = probe_video(output).num_frames
    clip = read_audio(output)
    assert (clip.sample_rate, clip.channels) == (rate, 2)
    assert abs(num_frames - 15) <= 1 and abs(clip.num_samples / rate - num_frames / 25) < 0.05
    assert main([*args, "-o", str(tmp_path / "named")]) == 0
    assert probe_video(tmp_path / "named.mp4").has_audio


def test_checkpoints_load_by_hub_repo_id_from_the_offline_cache(checkpoint, tmp_path, monkeypatch):
    """A repo id resolves through huggingface_hub's cache layout (models--owner--name/snapshots/<sha>,
    refs/main) with HF_HUB_OFFLINE=1; nothing touches the network."""
    import shutil

    from huggingface_hub import constants

    from difftalk.checkpoint import resolve_checkpoint_dir

    cache, sha = tmp_path / "hf" / "hub", "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--someone--difftalk-tiny"
    snapshot = repo / "snapshots" / sha
    shutil.copytree(checkpoint, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # huggingface_hub read the environment at import
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)  # no local folder called someone/difftalk-tiny

    pipe = DiffTalkPipeline.from_pretrained("someone/difftalk-tiny")
    assert pipe.default_steps == 3 and pipe.model_name == "someone/difftalk-tiny"
    expected = DiffTalkModel.from_pretrained(checkpoint).state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in pipe.model.state_dict().items())
    for source in ("someone/difftalk-tiny@main", f"someone/difftalk-tiny@{sha}"):
        assert resolve_checkpoint_dir(source).resolve() == snapshot.resolve()
    with pytest.raises(FileNotFoundError, match="neither an existing folder nor a Hugging Face Hub") as error:
        DiffTalkPipeline.from_pretrained("someone/not-cached")
    assert "HF_HUB_OFFLINE" in str(error.value) and "weights.safetensors" in str(error.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DiffTalkModel.from_pretrained(tmp_path / "runs" / "missing" / "model")


def test_audio_guidance_changes_the_mouth_and_warns_on_a_model_without_null_audio(checkpoint, media, tmp_path, caplog):
    """Guidance s ≠ 1 changes the generated frames; the checkpoint's recorded ``audio_dropout`` and
    ``audio_guidance`` are read, and guiding a model that never saw the null audio warns once."""
    from difftalk.pipeline.base import prepare_driving_audio

    def frames(pipe: DiffTalkPipeline, guidance: float | None) -> np.ndarray:
        options = GenerateOptions(audio_guidance=guidance, progressive_reference=False, noise="shared", **FAST)
        pipe.set_source(media / "photo.png", options)
        speech = np.sin(np.arange(8000) / 16000 * 2 * np.pi * 220).astype(np.float32) * 0.3
        driving = prepare_driving_audio(speech, pipe.track(), pipe.feature_backend, options)
        return np.stack([frame for frame, _ in pipe.iter_frames(driving, options)]).astype(np.float32)

    plain = DiffTalkPipeline.from_pretrained(checkpoint)
    assert plain.audio_dropout == 0.0 and plain.audio_guidance == 1.0
    caplog.clear()
    with caplog.at_level("WARNING"):
        base, guided = frames(plain, None), frames(plain, 3.0)
        frames(plain, 3.0)
    assert caplog.text.count("not trained with train.audio_dropout") == 1, caplog.text
    assert np.abs(guided - base).max() > 1

    model = DiffTalkModel.from_pretrained(checkpoint)
    model.save_pretrained(
        tmp_path / "guided", feature_backend="mel", sampler_steps=3, audio_dropout=0.2, audio_guidance=3.0
    )
    recorded = DiffTalkPipeline.from_pretrained(tmp_path / "guided")
    assert recorded.audio_dropout == 0.2 and recorded.audio_guidance == 3.0
    caplog.clear()
    with caplog.at_level("WARNING"):
        np.testing.assert_array_equal(frames(recorded, None), guided)  # None = the checkpoint's 3.0
        np.testing.assert_array_equal(frames(recorded, 1.0), base)
    assert "audio_dropout" not in caplog.text

    # what a direct student's network predicts (z_0) is kept for every sampler; the LCM grid only for LCM
    settings = {"original_inference_steps": 50, "prediction_type": "sample"}
    model.save_pretrained(tmp_path / "direct", feature_backend="mel", sampler="lcm", sampler_settings=settings)
    direct = DiffTalkPipeline.from_pretrained(tmp_path / "direct")
    lcm = direct.make_scheduler(GenerateOptions()).config
    assert lcm.prediction_type == "sample" and lcm.original_inference_steps == 50
    assert direct.make_scheduler(GenerateOptions(sampler="ddim")).config.prediction_type == "sample"
    assert plain.make_scheduler(GenerateOptions(sampler="lcm")).config.prediction_type == "epsilon"
    caplog.clear()
    with caplog.at_level("WARNING"):
        direct.check_steps(1, "lcm")
        assert "one-step student" not in caplog.text
        direct.check_steps(4, "lcm")
    assert "a one-step student (distill.method=direct)" in caplog.text

    model.save_pretrained(tmp_path / "student", feature_backend="mel", distilled=True, teacher={"audio_guidance": 2.0})
    student = DiffTalkPipeline.from_pretrained(tmp_path / "student")
    assert student.learned_audio_guidance == 2.0 and student.audio_guidance == 1.0
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert student.audio_guidance_of(GenerateOptions()) == 1.0
        assert "already learned" not in caplog.text
        assert student.audio_guidance_of(GenerateOptions(audio_guidance=2.0)) == 2.0
    assert caplog.text.count("already learned its teacher's audio guidance 2.00") == 1, caplog.text
    with pytest.raises(ValueError, match="audio_guidance"):
        GenerateOptions(audio_guidance=-1.0)


def test_decoding_only_the_pasted_window_changes_the_frames_only_there_and_little(checkpoint, media):
    from difftalk.pipeline.base import prepare_driving_audio

    pipe = DiffTalkPipeline.from_pretrained(checkpoint)
    speech = np.sin(np.arange(8000) / 16000 * 2 * np.pi * 220).astype(np.float32) * 0.3
    frames = {}
    for window in (False, True):
        options = GenerateOptions(progressive_reference=False, noise="shared", decode_window=window, **FAST)
        pipe.set_source(media / "face.mp4", options)
        driving = prepare_driving_audio(speech, pipe.track(), pipe.feature_backend, options)
        frames[window] = np.stack([frame for frame, _ in pipe.iter_frames(driving, options)]).astype(np.float32)
    original = np.stack(read_frames(media / "face.mp4")[: len(frames[True])]).astype(np.float32)
    track = pipe.track()
    changed = np.abs(frames[False] - original).max(axis=-1)
    difference = np.abs(frames[True] - frames[False]).max(axis=-1)
    for t in range(len(original)):  # what differs lies in the frame's face crop
        x0, y0, x1, y1 = track.boxes[t]
        outside = np.ones(difference[t].shape, bool)
        outside[max(0, int(y0)) : int(np.ceil(y1)) + 1, max(0, int(x0)) : int(np.ceil(x1)) + 1] = False
        assert not (difference[t][outside] > 0).any()
    assert difference.max() > 0  # the window decode is not the full one …
    mouth = difference > 0
    assert difference[mouth].mean() < 0.1 * changed[mouth].mean()  # … but close, where it differs at all


def test_a_model_with_a_unet_window_runs_its_unet_on_the_mouth_window_only(media, tmp_path):
    from difftalk.pipeline.base import prepare_driving_audio

    torch.manual_seed(0)
    model = replace(load_config("tiny").model, {"unet.zero_init": False, "unet_window": 1})
    DiffTalkModel(model).save_pretrained(tmp_path / "model", feature_backend="mel", sampler_steps=3)
    pipe = DiffTalkPipeline.from_pretrained(tmp_path / "model")
    seen: list[tuple[int, ...]] = []
    pipe.model.unet.register_forward_pre_hook(lambda _module, args: seen.append(tuple(args[0].shape[-2:])))
    options = GenerateOptions(progressive_reference=False, noise="shared", **FAST)
    pipe.set_source(media / "face.mp4", options)
    speech = np.sin(np.arange(8000) / 16000 * 2 * np.pi * 220).astype(np.float32) * 0.3
    driving = prepare_driving_audio(speech, pipe.track(), pipe.feature_backend, options)
    frames = [frame for frame, _ in pipe.iter_frames(driving, options)]
    assert len(frames) == 12 and seen  # 0.5 s at 25 frames/s
    latent = model.autoencoder.latent_size
    assert all(h <= latent and w <= latent and h * w < latent * latent for h, w in seen), seen
