"""Networks: shapes, zero-init, save→load, strict checkpoints, paper sizes on meta, and overfitting."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from difftalk.checkpoint import CheckpointError
from difftalk.config import AudioEncoderConfig, LandmarkEncoderConfig, load_config, replace
from difftalk.models.audio_encoder import AudioEncoder
from difftalk.models.autoencoder import Autoencoder
from difftalk.models.difftalk import DiffTalkModel
from difftalk.models.landmark_encoder import LandmarkEncoder
from difftalk.models.unet import build_unet


@pytest.mark.parametrize("batch", [1, 3])
def test_autoencoder_shapes(tiny_config, batch):
    ae = Autoencoder(tiny_config.model.autoencoder).eval()
    frames = torch.rand(batch, 3, 64, 64) * 2 - 1
    latents = ae.encode(frames)
    assert latents.shape == (batch, 3, 16, 16)
    assert ae.decode(latents).shape == (batch, 3, 64, 64)
    out = ae(frames)
    assert out.reconstruction.shape == frames.shape and out.codebook_loss.ndim == 0


def test_autoencoder_without_quantisation_decodes_continuous_latents(tiny_config):
    quantised = Autoencoder(tiny_config.model.autoencoder).eval()
    continuous = Autoencoder(replace(tiny_config.model.autoencoder, {"quantize": False})).eval()
    continuous.load_state_dict(quantised.state_dict(), strict=True)
    with torch.no_grad():
        latents = quantised.vq.quantize(quantised.encode(torch.rand(2, 3, 64, 64) * 2 - 1))[0]  # codebook vectors
    nudged = latents + 1e-4  # moves the latents, not their nearest codes
    with torch.no_grad():
        assert torch.equal(quantised.decode(latents), quantised.decode(nudged))
        assert not torch.allclose(continuous.decode(latents), continuous.decode(nudged))
        out = continuous(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert float(out.codebook_loss) == 0.0


def test_autoencoder_rejects_wrong_sizes(tiny_config):
    ae = Autoencoder(tiny_config.model.autoencoder)
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        ae.encode(torch.zeros(1, 3, 32, 32))


@pytest.mark.parametrize("temporal_filter", ["self_attention", "conv_softmax", "none"])
@pytest.mark.parametrize("batch", [1, 2])
def test_audio_encoder_shapes(temporal_filter, batch):
    config = AudioEncoderConfig(feature_dim=29, context_frames=8, temporal_filter=temporal_filter)
    encoder = AudioEncoder(config)
    out = encoder(torch.randn(batch, 8, 16, 29))
    assert out.vector.shape == (batch, 64) and out.tokens.shape == (batch, 8, 64)


def test_audio_smoothing_mixes_neighbouring_frames():
    """With a temporal filter the vector depends on neighbours; without one it is the centre frame's."""
    torch.manual_seed(0)
    features = torch.randn(1, 5, 16, 80)
    changed = features.clone()
    changed[:, 0] += 3.0  # change only the first (non-centre) frame
    for kind, depends in [("self_attention", True), ("conv_softmax", True), ("none", False)]:
        encoder = AudioEncoder(AudioEncoderConfig(context_frames=5, temporal_filter=kind))
        delta = (encoder(features).vector - encoder(changed).vector).abs().max().item()
        assert (delta > 1e-6) == depends, kind


def test_audio_encoder_names_the_expected_shape():
    encoder = AudioEncoder(AudioEncoderConfig())
    with pytest.raises(ValueError, match=r"\(B, 17, 16, 80\)"):
        encoder(torch.randn(2, 17, 16, 29))


@pytest.mark.parametrize("batch", [1, 4])
def test_landmark_encoder_shapes(batch):
    encoder = LandmarkEncoder(LandmarkEncoderConfig())
    assert encoder(torch.rand(batch, 39, 2)).shape == (batch, 64)
    with pytest.raises(ValueError, match=r"\(B, 39, 2\)"):
        encoder(torch.rand(batch, 68, 2))


@pytest.mark.parametrize("context", ["single_token", "multi_token"])
@pytest.mark.parametrize("batch", [1, 2])
def test_difftalk_noise_prediction_shapes(tiny_config, make_conditions, context, batch):
    model = DiffTalkModel(replace(tiny_config.model, {"context": context}))
    _, conditions = make_conditions(model, batch)
    assert conditions.reference_latents.shape == (batch, 3, 16, 16)
    ctx = model.encode_context(conditions.audio_features, conditions.landmarks)
    tokens = 1 if context == "single_token" else tiny_config.model.audio_encoder.context_frames + 1
    assert ctx.shape == (batch, tokens, tiny_config.model.context_dim)
    noise = model.predict_noise(torch.randn(batch, 3, 16, 16), torch.full((batch,), 500), conditions)
    assert noise.shape == (batch, 3, 16, 16)


def test_unet_is_zero_initialised_like_ldm(tiny_config, make_conditions):
    model = DiffTalkModel(tiny_config.model)
    _, conditions = make_conditions(model, 2)
    noise = model.predict_noise(torch.randn(2, 3, 16, 16), torch.tensor([1, 999]), conditions)
    assert torch.count_nonzero(noise) == 0
    assert model.unet.conv_in.in_channels == 9


def test_save_load_gives_identical_outputs(tiny_config, make_conditions, tmp_path):
    torch.manual_seed(0)
    model = DiffTalkModel(replace(tiny_config.model, {"unet.zero_init": False})).eval()
    _, conditions = make_conditions(model, 2)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    expected = model.predict_noise(x, t, conditions)
    assert expected.abs().sum() > 0
    model.save_pretrained(tmp_path / "ckpt", step=12)
    loaded = DiffTalkModel.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config
    assert torch.equal(loaded.predict_noise(x, t, conditions), expected)
    meta = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert meta["difftalk_kind"] == "DiffTalkModel" and meta["extra"]["step"] == 12


def test_fp16_checkpoint_is_half_the_size_and_loads(tiny_config, tmp_path):
    model = DiffTalkModel(tiny_config.model)
    model.save_pretrained(tmp_path / "fp32")
    model.save_pretrained(tmp_path / "fp16", dtype=torch.float16)
    size32 = (tmp_path / "fp32" / "weights.safetensors").stat().st_size
    size16 = (tmp_path / "fp16" / "weights.safetensors").stat().st_size
    assert size16 < 0.55 * size32
    loaded = DiffTalkModel.from_pretrained(tmp_path / "fp16")
    assert next(loaded.parameters()).dtype == torch.float32


def test_autoencoder_save_load(tiny_config, tmp_path):
    ae = Autoencoder(tiny_config.model.autoencoder).eval()
    frames = torch.rand(1, 3, 64, 64) * 2 - 1
    ae.save_pretrained(tmp_path / "ae")
    loaded = Autoencoder.from_pretrained(tmp_path / "ae")
    assert torch.equal(loaded.decode(loaded.encode(frames)), ae.decode(ae.encode(frames)))


def test_folders_that_are_not_checkpoints_are_refused(tiny_config, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DiffTalkModel.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a difftalk checkpoint"):
        DiffTalkModel.from_pretrained(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    with pytest.raises(CheckpointError, match="not a difftalk checkpoint"):
        DiffTalkModel.from_pretrained(tmp_path / "other")
    Autoencoder(tiny_config.model.autoencoder).save_pretrained(tmp_path / "ae")
    with pytest.raises(CheckpointError, match="holds a Autoencoder"):
        DiffTalkModel.from_pretrained(tmp_path / "ae")
    (tmp_path / "ae" / "weights.safetensors").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        Autoencoder.from_pretrained(tmp_path / "ae")


def test_loading_is_strict(tiny_config, tmp_path):
    DiffTalkModel(tiny_config.model).save_pretrained(tmp_path / "ckpt")
    meta_path = tmp_path / "ckpt" / "config.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["unet"]["block_out_channels"] = [32, 32]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not match"):
        DiffTalkModel.from_pretrained(tmp_path / "ckpt")


def test_paper_256_unet_has_530m_parameters_and_9_input_channels():
    model = load_config("paper_256").model
    with torch.device("meta"):
        unet = build_unet(model.unet, 3, 64, model.context_dim)
    count = sum(p.numel() for p in unet.parameters())
    assert 525e6 < count < 535e6, count
    assert unet.conv_in.in_channels == 9 and unet.conv_out.out_channels == 3
    heads = {b.attentions[0].transformer_blocks[0].attn2.heads for b in unet.down_blocks if hasattr(b, "attentions")}
    assert heads == {16, 24, 32}  # 512/32, 768/32, 1024/32: head dim 32 everywhere


def test_paper_512_autoencoder_keeps_the_64x64x3_latent():
    config = load_config("paper_512").model.autoencoder
    with torch.device("meta"):
        ae = Autoencoder(config)
        latents = ae.encode(torch.empty(1, 3, 512, 512))
    assert tuple(latents.shape) == (1, 3, 64, 64)


@pytest.mark.slow
def test_tiny_model_overfits_one_fixed_batch(tiny_config, make_conditions):
    torch.manual_seed(0)
    model = DiffTalkModel(tiny_config.model)
    frames, conditions = make_conditions(model, 2)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    losses = []
    for _ in range(60):
        generator = torch.Generator().manual_seed(123)  # the same t and noise every step
        loss = model.training_loss(target_frames=frames, conditions=conditions, generator=generator).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
    assert all(not p.requires_grad for p in model.autoencoder.parameters())


def test_condition_ablations_remove_their_input(tiny_config, make_conditions):
    torch.manual_seed(0)
    base = replace(tiny_config.model, {"unet.zero_init": False, "use_reference": False, "use_landmarks": False})
    model = DiffTalkModel(base).eval()
    _, conditions = make_conditions(model, 1)
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([10])
    before = model.predict_noise(x, t, conditions)
    conditions.reference_latents = conditions.reference_latents + 1.0
    conditions.landmarks = conditions.landmarks * 0.5
    assert torch.equal(model.predict_noise(x, t, conditions), before)
    conditions.masked_latents = conditions.masked_latents + 1.0
    assert not torch.equal(model.predict_noise(x, t, conditions), before)


def _loss(model, frames, conditions, mask, weighting, timesteps, audio_dropout=0.0):
    from difftalk.models.difftalk import LossWeighting

    return model.training_loss(
        conditions=conditions,
        target_frames=frames,
        generator=torch.Generator().manual_seed(3),
        timesteps=timesteps,
        latent_mouth_mask=mask,
        weighting=weighting or LossWeighting(),
        audio_dropout=audio_dropout,
    )


def test_loss_weighting_over_space_and_t(tiny_config, make_conditions):
    """Default: the plain ε-MSE. Mask weighting: (inside·n_in + w·outside·n_out) / (n_in + w·n_out) per sample.
    Min-SNR-γ: each sample scaled by min(SNR, γ) / SNR — a t = 5 sample (SNR ≈ 130) by γ / SNR."""
    from difftalk.models.difftalk import LossWeighting

    torch.manual_seed(0)
    model = DiffTalkModel(replace(tiny_config.model, {"unet.zero_init": False}))
    frames, conditions = make_conditions(model, 2)
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 9:, 4:12] = 1
    t = torch.tensor([5, 600])
    plain = _loss(model, frames, conditions, mask, None, t)
    unmasked = _loss(model, frames, conditions, None, None, t)
    torch.testing.assert_close(plain.loss, unmasked.loss)
    assert unmasked.mse_inside is None and plain.mse_inside.shape == (2,)
    n_in, n_out = 7 * 8, 256 - 7 * 8
    overall = (plain.mse_inside * n_in + plain.mse_outside * n_out) / 256
    torch.testing.assert_close(plain.loss, overall.mean())

    weighted = _loss(model, frames, conditions, mask, LossWeighting(mask_loss_outside=0.1, mask_loss_dilate=0), t)
    expected = (plain.mse_inside * n_in + 0.1 * plain.mse_outside * n_out) / (n_in + 0.1 * n_out)
    torch.testing.assert_close(weighted.loss, expected.mean())
    dilated = _loss(model, frames, conditions, mask, LossWeighting(mask_loss_outside=0.1, mask_loss_dilate=1), t)
    assert not torch.allclose(dilated.loss, weighted.loss)

    snr = _loss(model, frames, conditions, mask, LossWeighting(min_snr_gamma=5.0), t)
    alpha = model.alphas_cumprod[t].float()
    ratio = alpha / (1 - alpha)
    per_sample = (plain.mse_inside * n_in + plain.mse_outside * n_out) / 256
    torch.testing.assert_close(snr.loss, (per_sample * ratio.clamp(max=5.0) / ratio).mean())
    assert ratio[0] > 100 and ratio[1] < 5  # t = 5 is down-weighted, t = 600 keeps weight 1
    with pytest.raises(ValueError, match="latent_mouth_mask"):
        _loss(model, frames, conditions, None, LossWeighting(mask_loss_outside=0.5), t)


def test_latent_masked_target_is_exact_outside_the_mask_and_empty_inside(tiny_config):
    model = DiffTalkModel(replace(tiny_config.model, {"masked_target": "latent"}))
    latents = torch.randn(2, 3, 16, 16)
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 10:, 3:13] = 1
    masked = model.masked_target_latents(latents, mask)
    assert torch.equal(masked[:, :, :10], latents[:, :, :10]) and torch.equal(masked[:, :, :, :3], latents[:, :, :, :3])
    assert not masked[mask.expand_as(masked).bool()].any()
    pixel = DiffTalkModel(tiny_config.model)
    with pytest.raises(ValueError, match="masked_frames"):
        pixel.masked_target_latents(latents, mask)
    frames = torch.rand(2, 3, 64, 64) * 2 - 1
    torch.testing.assert_close(pixel.masked_target_latents(latents, mask, frames), pixel.encode_frames(frames))


@pytest.mark.parametrize("temporal_filter", ["self_attention", "conv_softmax"])
def test_smoothing_filter_can_start_at_the_centre_frame(temporal_filter):
    """``uniform`` (paper) starts as a box average over the 17 frames; ``centre`` puts ≈96% on the target frame."""
    features = torch.randn(4, 17, 16, 80)
    centre = {}
    for init in ("uniform", "centre"):
        torch.manual_seed(0)
        config = AudioEncoderConfig(context_frames=17, temporal_filter=temporal_filter, filter_init=init)
        with torch.no_grad():
            centre[init] = float(AudioEncoder(config)(features).weights[:, 8].mean())
    assert centre["uniform"] < 0.2 and centre["centre"] > 0.9, centre


@pytest.mark.parametrize("context", ["single_token", "multi_token"])
def test_null_audio_context_ignores_the_audio_and_keeps_the_landmarks(tiny_config, make_conditions, context):
    """``drop_audio`` rows get the same context whatever their audio; the other rows are untouched."""
    torch.manual_seed(0)
    model = DiffTalkModel(replace(tiny_config.model, {"context": context}))
    _, conditions = make_conditions(model, 3)
    other_audio = torch.randn_like(conditions.audio_features)
    drop = torch.tensor([True, False, True])
    plain = model.encode_context(conditions.audio_features, conditions.landmarks)
    dropped = model.encode_context(conditions.audio_features, conditions.landmarks, drop_audio=drop)
    other = model.encode_context(other_audio, conditions.landmarks, drop_audio=drop)
    torch.testing.assert_close(dropped[1], plain[1])
    torch.testing.assert_close(dropped[[0, 2]], other[[0, 2]])
    assert not torch.allclose(dropped[0], plain[0])
    assert not torch.allclose(other[1], plain[1])  # (the audio does change a kept row)
    moved = model.encode_context(other_audio, conditions.landmarks.flip(1), drop_audio=drop)
    assert not torch.allclose(moved[0], other[0])  # the landmarks still count in a null-audio row


def test_audio_guidance_combines_the_audio_and_null_audio_predictions(tiny_config, make_conditions):
    """s = 1 is the plain denoiser, s = 0 the null-audio prediction, and any s the line ε̂_∅ + s (ε̂_a − ε̂_∅)
    through them, computed in one batch."""
    torch.manual_seed(0)
    model = DiffTalkModel(replace(tiny_config.model, {"unet.zero_init": False, "context": "multi_token"})).eval()
    _, conditions = make_conditions(model, 2)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([40, 600])
    with torch.no_grad():
        with_audio = model.predict_noise(x, t, conditions)
        null = model.encode_context(
            conditions.audio_features, conditions.landmarks, drop_audio=torch.ones(2, dtype=torch.bool)
        )
        without = model.predict_noise(x, t, conditions, context=null)
        assert not torch.allclose(with_audio, without, atol=1e-4)
        torch.testing.assert_close(model.make_denoiser(conditions)(x, t), with_audio)
        torch.testing.assert_close(model.make_denoiser(conditions, audio_guidance=1.0)(x, t), with_audio)
        torch.testing.assert_close(
            model.make_denoiser(conditions, audio_guidance=0.0)(x, t), without, atol=1e-5, rtol=1e-4
        )
        guided = model.make_denoiser(conditions, audio_guidance=2.5)(x, t)
        torch.testing.assert_close(guided, without + 2.5 * (with_audio - without), atol=1e-5, rtol=1e-4)
        scalar_t = model.make_denoiser(conditions, audio_guidance=2.5)(x, torch.tensor(600))
        torch.testing.assert_close(scalar_t[1], guided[1], atol=1e-5, rtol=1e-4)


def test_audio_dropout_in_the_loss_is_seeded_and_off_by_default(tiny_config, make_conditions):
    """p = 0 sees the audio (the loss changes with it); p ≈ 1 makes the loss blind to the audio;
    a given generator seed gives the same drops."""
    torch.manual_seed(0)
    model = DiffTalkModel(replace(tiny_config.model, {"unet.zero_init": False}))
    frames, conditions = make_conditions(model, 4)
    t = torch.tensor([100, 300, 500, 700])

    def loss(audio: torch.Tensor, dropout: float) -> torch.Tensor:
        shown = dataclasses.replace(conditions, audio_features=audio)
        return _loss(model, frames, shown, None, None, t, audio_dropout=dropout).loss

    audio, other = conditions.audio_features, torch.randn_like(conditions.audio_features)
    with torch.no_grad():
        assert not torch.allclose(loss(audio, 0.0), loss(other, 0.0))
        torch.testing.assert_close(loss(audio, 0.999), loss(other, 0.999))
        assert torch.equal(loss(audio, 0.5), loss(audio, 0.5))
