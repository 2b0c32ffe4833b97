"""Dataset invariants: reference distance, the mask covers the mouth, no mouth pixels leak, resume-safe randomness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from difftalk.data.batch import collate_samples
from difftalk.data.clips import DatasetError
from difftalk.data.dataset import TalkingHeadDataset
from difftalk.data.masks import apply_mask, latent_mask, mouth_box, mouth_mask
from difftalk.data.transforms import augment_colours
from difftalk.preprocess.landmarks import CONDITION_POINTS, MOUTH
from tests.fakes import face_landmarks


def _dataset(root, split="train", distance=8, seed=0, **kwargs):
    return TalkingHeadDataset(
        root, split=split, image_size=64, context_frames=5, reference_min_distance=distance, seed=seed, **kwargs
    )


def test_samples_have_named_fields_and_shapes(prepared_dataset):
    dataset = _dataset(prepared_dataset)
    assert len(dataset) == 2 * 39  # two training identities, one frame without a face each
    batch = collate_samples([dataset[0], dataset[7]])
    assert batch.target_frames.shape == (2, 3, 64, 64)
    assert batch.masked_frames.shape == batch.reference_frames.shape == (2, 3, 64, 64)
    assert batch.mouth_masks.shape == (2, 1, 64, 64)
    assert batch.landmarks.shape == (2, 39, 2) and batch.landmarks.abs().max() <= 1
    assert batch.audio_features.shape == (2, 5, 16, 80)
    assert batch.target_frames.min() >= -1 and batch.target_frames.max() <= 1


def test_reference_is_far_away_and_redrawn_every_epoch(prepared_dataset):
    dataset = _dataset(prepared_dataset, distance=8)
    for index in range(len(dataset)):
        sample = dataset[index]
        assert abs(int(sample.reference_index) - int(sample.frame_index)) >= 8
        assert int(sample.reference_index) != 3  # the frame without a face is never used
    first = [int(dataset[i].reference_index) for i in range(20)]
    assert first == [int(dataset[i].reference_index) for i in range(20)]  # same epoch → same choice
    dataset.set_epoch(1)
    assert first != [int(dataset[i].reference_index) for i in range(20)]


def test_frames_without_a_face_are_skipped(prepared_dataset):
    dataset = _dataset(prepared_dataset)
    assert 3 not in {int(dataset[i].frame_index) for i in range(len(dataset)) if dataset.locate(i)[0] == 0}


def test_mask_covers_every_mouth_landmark(prepared_dataset):
    dataset = _dataset(prepared_dataset, split="all")
    for clip in dataset.clips:
        for frame in range(clip.num_frames):
            points = clip.landmarks_at(frame, 64)
            mask = mouth_mask(points, 64)
            for x, y in points[list(MOUTH)]:
                assert mask[int(y), int(x)] == 1.0
            jaw_and_mouth = points[list(range(4, 13)) + list(MOUTH)]
            assert all(mask[min(int(y), 63), int(x)] == 1.0 for x, y in jaw_and_mouth)


def test_mask_shape_does_not_depend_on_the_mouth():
    closed, wide = face_landmarks(64, 0.0), face_landmarks(64, 1.0)
    assert mouth_box(closed, 64) == mouth_box(wide, 64)  # same upper face → same mask, whatever the mouth does
    moved = closed.copy()
    moved[list(CONDITION_POINTS)] += 2.0
    assert mouth_box(moved, 64) != mouth_box(closed, 64)


def test_masked_target_carries_no_mouth_pixels(prepared_dataset):
    dataset = _dataset(prepared_dataset)
    sample = dataset[10]
    inside = sample.mouth_masks.bool().expand_as(sample.masked_frames)
    assert inside.any()
    assert torch.all(sample.masked_frames[inside] == -1.0)
    assert torch.equal(sample.masked_frames[~inside], sample.target_frames[~inside])
    # Whatever the mouth region contains, the masked target is the same.
    scrambled = sample.target_frames.clone()
    scrambled[inside] = torch.rand(int(inside.sum())) * 2 - 1
    assert torch.equal(apply_mask(scrambled, sample.mouth_masks), sample.masked_frames)


def test_latent_mask_covers_the_pixel_mask():
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 37:, 13:51] = 1
    small = latent_mask(mask, 16)
    up = torch.nn.functional.interpolate(small, size=64, mode="nearest")
    assert torch.all(up[mask.bool()] == 1)
    assert small.sum() < 16 * 16


def test_audio_windows_are_centred_on_the_target(prepared_dataset):
    dataset = _dataset(prepared_dataset)
    clip = dataset.clips[0]
    window = dataset.audio_window(0, 10)
    features = np.asarray(clip.features("mel"), dtype=np.float32)
    assert np.array_equal(window[2], features[10]) and np.array_equal(window[0], features[8])
    edge = dataset.audio_window(0, 0)
    assert np.array_equal(edge[0], features[0]) and np.array_equal(edge[1], features[0])


def test_silence_rule_in_training_is_the_inference_rule(prepared_dataset):
    """data.silence_db: silent frames get digital silence's window, exactly as generation replaces them."""
    from difftalk.io.audio import load_audio
    from difftalk.preprocess.audio_features import replace_silent_frames, silence_window, silent_frames

    plain = _dataset(prepared_dataset)
    dataset = _dataset(prepared_dataset, silence_db=-45.0, silence_hold=0)
    clip = dataset.clips[0]
    audio = load_audio(clip.path / "audio.wav")
    silent = silent_frames(audio, clip.num_frames, -45.0)
    assert 0 < silent.sum() < clip.num_frames  # the synthetic speech has pauses
    expected = replace_silent_frames(np.asarray(clip.features("mel"), dtype=np.float32), audio, -45.0, "mel")
    silence = silence_window("mel").astype(np.float32)
    for frame in range(clip.num_frames):
        window, stored = dataset.audio_window(0, frame), plain.audio_window(0, frame)
        assert np.array_equal(window[2], expected[frame])
        assert np.array_equal(window[2], silence if silent[frame] else stored[2])
    held = _dataset(prepared_dataset, silence_db=-45.0)  # the default hold, generation's (4)
    expected = replace_silent_frames(np.asarray(clip.features("mel"), np.float32), audio, -45.0, "mel", hold=4)
    assert all(np.array_equal(held.audio_window(0, f)[2], expected[f]) for f in range(clip.num_frames))
    assert silent_frames(audio, clip.num_frames, -45.0, hold=4).sum() < silent.sum()  # gaps inside speech kept


def test_missing_things_give_clear_errors(prepared_dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="difftalk preprocess"):
        _dataset(tmp_path / "nothing")
    with pytest.raises(DatasetError, match="not a prepared dataset"):
        _dataset(tmp_path)
    with pytest.raises(DatasetError, match="whisper"):
        TalkingHeadDataset(prepared_dataset, image_size=64, context_frames=5, feature_backend="whisper")


def test_colour_augmentation_recolours_and_mirrors_deterministically():
    frames = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.6
    a = augment_colours(frames, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, augment_colours(frames, torch.Generator().manual_seed(1)))
    assert a.shape == frames.shape and a.min() >= -1 and a.max() <= 1
    # every output channel is gain · (one input channel, maybe mirrored) + offset, gain in [0.75, 1.25]
    flipped, permuted = 0, 0
    for out, src in zip(a, frames, strict=True):
        matches = []
        for mirror, image in enumerate((src, src.flip(-1))):
            for index, source in enumerate(image):
                x = torch.stack([source.flatten(), torch.ones(64)], dim=1)
                for channel, target in enumerate(out):
                    solution = torch.linalg.lstsq(x, target.flatten()[:, None]).solution
                    residual = float((x @ solution - target.flatten()[:, None]).abs().max())
                    if residual < 1e-4 and 0.74 < float(solution[0]) < 1.26:
                        matches.append((mirror, index, channel))
        assert len(matches) == 3 and len({m[0] for m in matches}) == 1  # one mirror state per frame
        flipped += matches[0][0]
        permuted += int(any(index != channel for _, index, channel in matches))
    assert 16 < flipped < 48 and permuted > 32  # flips ~1/2, non-identity permutations ~5/6
    assert (a.mean((2, 3)) - frames.mean((2, 3))).abs().max() > 0.1  # colours move
