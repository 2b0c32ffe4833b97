"""``difftalk distill``: the LCM parametrisation matches diffusers' LCMScheduler, a tiny distillation runs, records
its teacher, resumes exactly, refuses another teacher, and the student samples with LCMScheduler at 1-4 steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from difftalk.checkpoint import CONFIG_NAME, weights_sha256
from difftalk.cli import main
from difftalk.config import ConfigError, load_config, replace
from difftalk.diffusion.schedule import make_betas
from difftalk.models.difftalk import DiffTalkModel
from difftalk.train.common import STATE_NAME, load_state
from difftalk.train.distill import boundary_scalings, consistency_function, direct_loss, lcm_grid, train_distill

pytestmark = pytest.mark.usefixtures("one_thread")


def _lcm_scheduler(model: DiffTalkModel, original_inference_steps: int):
    from diffusers import LCMScheduler

    d = model.config.diffusion
    return LCMScheduler(
        num_train_timesteps=d.num_train_timesteps,
        trained_betas=make_betas(d.beta_schedule, d.num_train_timesteps, d.beta_start, d.beta_end).numpy(),
        prediction_type="epsilon",
        original_inference_steps=original_inference_steps,
    )


def _save_teacher(directory: Path, seed: int, zero_init: bool = True, **extra: object) -> Path:
    """A tiny random teacher whose UNet output is not zero (zero_init would make ε̂ ≡ 0); ``zero_init=False``:
    every block random, so ε̂ also depends on the context (the audio)."""
    torch.manual_seed(seed)
    model = DiffTalkModel(replace(load_config("tiny").model, {"unet.zero_init": zero_init}))
    with torch.no_grad():
        for parameter in model.unet.conv_out.parameters():
            parameter.normal_(0, 0.02)
    model.save_pretrained(directory, feature_backend="mel", sampler_steps=10, **extra)
    return directory


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return _save_teacher(tmp_path_factory.mktemp("teacher") / "model", seed=0)


def _config(data_dir, run_dir, teacher_dir, **overrides):
    base = {
        "data.data_dir": str(data_dir),
        "distill.teacher": str(teacher_dir),
        "distill.run_dir": str(run_dir),
        "distill.sample_every": 0,
        "distill.checkpoint_every": 100,
        "distill.accelerator": "cpu",
    }
    return replace(load_config("tiny"), {**base, **overrides})


def _state(run_dir: Path) -> dict:
    return load_state(run_dir / "checkpoints" / STATE_NAME)


def test_the_parametrisation_is_lcm_schedulers(teacher):
    model = DiffTalkModel.from_pretrained(teacher)
    scheduler = _lcm_scheduler(model, 50)
    for t in (0, 1, 19, 259, 999):
        c_skip, c_out = boundary_scalings(torch.tensor([t]))
        expected = scheduler.get_scalings_for_boundary_condition_discrete(t)
        assert (float(c_skip), float(c_out)) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    grid = lcm_grid(1000, 50)
    scheduler.set_timesteps(50)
    assert torch.equal(scheduler.timesteps, grid.flip(0))
    for steps in (1, 2, 4):
        scheduler.set_timesteps(steps)
        assert set(scheduler.timesteps.tolist()) <= set(grid.tolist())
    # f(x, t) is LCMScheduler.step's `denoised` (the last step of a schedule returns it)
    scheduler.set_timesteps(1)
    generator = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(2, 3, 16, 16, generator=generator), torch.randn(2, 3, 16, 16, generator=generator)
    t = scheduler.timesteps[0]
    denoised = scheduler.step(noise, t, latents).denoised
    ours = consistency_function(latents, noise, t.expand(2), model.alphas_cumprod)
    torch.testing.assert_close(ours, denoised, rtol=1e-5, atol=1e-5)


def test_skip_off_the_grid_is_a_config_error_naming_the_field():
    with pytest.raises(ConfigError, match=r"distill\.skip.*multiple of .* 20"):
        replace(load_config("tiny"), {"distill.skip": 30})
    with pytest.raises(ConfigError, match=r"sampler_steps"):
        replace(load_config("tiny"), {"distill.sampler_steps": 8, "distill.original_inference_steps": 4})


@pytest.mark.slow
def test_distillation_trains_the_student_and_records_its_teacher(prepared_dataset, teacher, tmp_path):
    run_dir = tmp_path / "run"
    config = _config(prepared_dataset, run_dir, teacher, **{"distill.steps": 2, "distill.sample_every": 2})
    before = weights_sha256(teacher)
    result = train_distill(config, progress=False)
    assert result.step == 2 and not result.stopped_early
    assert torch.isfinite(torch.tensor(result.last_loss)) and result.last_loss > 0
    assert weights_sha256(teacher) == before == result.teacher_sha256  # the teacher is read, never written
    meta = json.loads((result.model_dir / CONFIG_NAME).read_text())["extra"]
    assert meta["teacher"] == {"sha256": weights_sha256(teacher), "path": str(teacher), "audio_guidance": 1.0}
    assert meta["sampler"] == "lcm" and meta["sampler_steps"] == 4 and meta["distilled"] is True
    assert meta["sampler_settings"] == {"original_inference_steps": 50} and meta["feature_backend"] == "mel"
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,loss,lr")
    assert (run_dir / "samples" / "step_0000002.png").stat().st_size > 0
    info = json.loads((run_dir / "run.json").read_text())
    assert info["teacher"]["sha256"] == before and info["stage"] == "distill"
    # the student moved away from the teacher; its config is the teacher's
    student, original = DiffTalkModel.from_pretrained(result.model_dir), DiffTalkModel.from_pretrained(teacher)
    assert student.config == original.config
    assert not torch.equal(student.unet.conv_out.weight, original.unet.conv_out.weight)
    torch.testing.assert_close(student.autoencoder.state_dict(), original.autoencoder.state_dict())


@pytest.mark.slow
def test_resume_after_2_steps_ends_where_4_uninterrupted_steps_do(prepared_dataset, teacher, tmp_path):
    straight = _config(prepared_dataset, tmp_path / "a", teacher, **{"distill.steps": 4})
    train_distill(straight, progress=False)
    half = _config(prepared_dataset, tmp_path / "b", teacher, **{"distill.steps": 2})
    train_distill(half, progress=False)
    assert _state(tmp_path / "b")["step"] == 2
    train_distill(replace(half, {"distill.steps": 4}), progress=False)
    a, b = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert a["step"] == b["step"] == 4 and a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["ema"]["shadow"][k], b["ema"]["shadow"][k]) for k in a["ema"]["shadow"])


@pytest.mark.slow
def test_the_student_learns_the_teachers_audio_guided_ode(prepared_dataset, tmp_path):
    """A teacher that records audio guidance 3 (and its audio dropout) is distilled guided: same seed and
    data, the student differs from the unguided distillation's, and records the guidance it learnt."""
    guided = _save_teacher(tmp_path / "teacher", seed=0, zero_init=False, audio_dropout=0.2, audio_guidance=3.0)
    students = {}
    for scale in (None, 1.0):
        config = _config(prepared_dataset, tmp_path / f"run_{scale}", guided, **{"distill.steps": 2})
        result = train_distill(replace(config, {"distill.teacher_audio_guidance": scale}), progress=False)
        meta = json.loads((result.model_dir / CONFIG_NAME).read_text())["extra"]
        assert meta["teacher"]["audio_guidance"] == (3.0 if scale is None else 1.0)
        assert "audio_guidance" not in meta  # the student itself is sampled unguided
        students[scale] = DiffTalkModel.from_pretrained(result.model_dir).unet.conv_out.weight
    assert not torch.equal(students[None], students[1.0])


def test_guiding_a_teacher_without_null_audio_is_refused(tmp_path):
    teacher = _save_teacher(tmp_path / "teacher", seed=0)
    config = _config(tmp_path / "no-data", tmp_path / "run", teacher, **{"distill.teacher_audio_guidance": 2.0})
    with pytest.raises(ValueError, match=r"teacher_audio_guidance 2.*train.audio_dropout"):
        train_distill(config, progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_resuming_with_another_teacher_is_refused(prepared_dataset, tmp_path):
    first = _save_teacher(tmp_path / "teacher", seed=0)
    config = _config(prepared_dataset, tmp_path / "run", first, **{"distill.steps": 1})
    train_distill(config, progress=False)
    _save_teacher(first, seed=1)  # the folder now holds other weights
    with pytest.raises(ValueError, match=r"sha256.*resume with the teacher the run started with"):
        train_distill(replace(config, {"distill.steps": 2}), progress=False)
    # a fresh start with the new teacher is fine
    assert train_distill(replace(config, {"distill.steps": 1}), resume=False, progress=False).step == 1


def test_the_student_samples_with_lcm_scheduler(prepared_dataset, teacher, tmp_path, make_conditions):
    config = _config(prepared_dataset, tmp_path / "run", teacher, **{"distill.steps": 1})
    student = DiffTalkModel.from_pretrained(train_distill(config, progress=False).model_dir)
    _, conditions = make_conditions(student, batch=2)
    denoise = student.make_denoiser(conditions)
    shape = conditions.masked_latents.shape
    for steps in (1, 2, 4):
        scheduler = _lcm_scheduler(student, config.distill.original_inference_steps)
        scheduler.set_timesteps(steps)
        generator = torch.Generator().manual_seed(0)
        latents = torch.randn(shape, generator=generator)
        with torch.no_grad():
            for t in scheduler.timesteps:
                latents = scheduler.step(denoise(latents, t.expand(shape[0])), t, latents, generator=generator)[0]
        assert latents.shape == shape and torch.isfinite(latents).all()


def _oracle(clean: torch.Tensor, alphas_cumprod: torch.Tensor):
    """ε̂ that points every x_t exactly at ``clean``: a sampler driven by it returns ``clean`` in the mask."""

    def denoise(latents: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        a = alphas_cumprod[timesteps].to(latents.dtype).view(-1, 1, 1, 1)
        return (latents - a.sqrt() * clean) / (1 - a).sqrt()

    return denoise


def test_direct_loss_is_the_distance_between_one_student_step_and_the_teachers_sample(teacher):
    model = DiffTalkModel.from_pretrained(teacher)
    config = replace(load_config("tiny"), {"distill.method": "direct", "distill.teacher_steps": 3})
    generator = torch.Generator().manual_seed(0)
    clean, other = torch.randn(2, 3, 8, 8, generator=generator), torch.randn(2, 3, 8, 8, generator=generator)
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 4:, 2:6] = 1
    ac = model.alphas_cumprod
    common = {"clean": clean, "mouth_mask": mask, "alphas_cumprod": ac, "settings": config.distill}

    def loss(student):
        return direct_loss(student, _oracle(clean, ac), **common, generator=torch.Generator().manual_seed(1))

    # the teacher's 3-step DDIM sample is `clean` (up to LDM's last step landing on ᾱ_0, not 1); the student
    # predicts z_0 itself, and one that predicts `clean` costs little
    same = loss(lambda x, t: clean.expand_as(x))
    assert float(same) < 0.05
    # a student pointing elsewhere pays for the mouth (outside it the known latents are put back exactly)
    off = other * mask + clean * (1 - mask)
    assert float(loss(lambda x, t: off.expand_as(x))) > 10 * float(same)
    # an ε-predicting student read as z_0 is far off: the student's output is z_0, not noise
    assert float(loss(_oracle(clean, ac))) > 10 * float(same)
    # and the gradient reaches the student through the sampler
    scale = torch.ones((), requires_grad=True)
    loss(lambda x, t: scale * clean.expand_as(x)).backward()
    assert scale.grad is not None and torch.isfinite(scale.grad)


def test_a_direct_student_samples_with_one_step_and_lcm_defaults_stay_4():
    tiny = load_config("tiny")
    assert tiny.distill.method == "lcm" and tiny.distill.student_steps == 4
    assert replace(tiny, {"distill.method": "direct"}).distill.student_steps == 1
    with pytest.raises(ConfigError, match=r"distill\.sampler_steps.*direct distillation trains one step"):
        replace(tiny, {"distill.method": "direct", "distill.sampler_steps": 4})
    with pytest.raises(ConfigError, match=r"distill\.method"):
        replace(tiny, {"distill.method": "progressive"})


@pytest.mark.slow
def test_direct_distillation_starts_from_init_and_records_its_method(prepared_dataset, teacher, tmp_path):
    init = _save_teacher(tmp_path / "init", seed=5)  # a "student" of the same architecture
    overrides = {"distill.steps": 2, "distill.method": "direct", "distill.teacher_steps": 2, "distill.init": str(init)}
    config = _config(prepared_dataset, tmp_path / "run", teacher, **overrides)
    result = train_distill(config, progress=False)
    assert result.step == 2 and torch.isfinite(torch.tensor(result.last_loss))
    meta = json.loads((result.model_dir / CONFIG_NAME).read_text())["extra"]
    assert meta["distill_method"] == "direct" and meta["sampler"] == "lcm" and meta["sampler_steps"] == 1
    assert meta["sampler_settings"] == {"original_inference_steps": 50, "prediction_type": "sample"}
    assert meta["teacher"]["sha256"] == weights_sha256(teacher)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["method"] == "direct" and info["init"] == {"sha256": weights_sha256(init), "path": str(init)}
    # it started from `init`, not from the teacher: after 2 small steps it is still near `init`
    student = DiffTalkModel.from_pretrained(result.model_dir).unet.conv_out.weight
    start, other = (DiffTalkModel.from_pretrained(d).unet.conv_out.weight for d in (init, teacher))
    assert (student - start).abs().max() < (student - other).abs().max()
    # an init of another architecture is refused before anything is written
    wide = tmp_path / "wide"
    DiffTalkModel(replace(load_config("tiny").model, {"unet.head_dim": 4})).save_pretrained(wide, feature_backend="mel")
    refused = _config(prepared_dataset, tmp_path / "run2", teacher, **{**overrides, "distill.init": str(wide)})
    with pytest.raises(ValueError, match=r"distill\.init .* another model config than the teacher"):
        train_distill(refused, progress=False)


def test_cli_distill_wires_the_teacher_config_and_no_resume(monkeypatch, teacher, tmp_path):
    from difftalk.train import distill

    seen = {}

    def fake(config, resume, progress):
        seen.update(config=config, resume=resume, progress=progress)
        return distill.DistillResult(tmp_path, 1, 0.5, False, tmp_path / "model", "0" * 64)

    monkeypatch.setattr(distill, "train_distill", fake)
    argv = ["distill", "--teacher", str(teacher), "--config", "tiny", "--set", "distill.steps=7", "--no-resume"]
    assert main([*argv, "--data", str(tmp_path / "data"), "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 0
    config = seen["config"]
    assert config.distill.teacher == str(teacher) and config.distill.steps == 7
    assert config.data.data_dir == str(tmp_path / "data") and config.distill.run_dir == str(tmp_path / "run")
    assert seen["resume"] is False and seen["progress"] is False


def test_the_shipped_student_was_distilled_from_the_shipped_teacher():
    # the recipe work replaces the demo model: a student of an older teacher must be distilled again
    from difftalk.checkpoint import read_checkpoint_meta, weights_sha256
    from difftalk.demo import ASSETS, DEMO_MODEL

    extra = read_checkpoint_meta(ASSETS / "demo_student", "DiffTalkModel")["extra"]
    assert extra["distilled"] and extra["sampler"] == "lcm"
    assert extra["teacher"]["sha256"] == weights_sha256(DEMO_MODEL)
    # the one-step direct student of the teacher's guided default (docs/results.md §9)
    assert extra["distill_method"] == "direct" and extra["sampler_steps"] == 1
    assert extra["sampler_settings"]["prediction_type"] == "sample" and extra["teacher"]["audio_guidance"] == 2.0


def test_ship_model_writes_fp16_and_records_audio_guidance_only_for_a_model_with_audio_dropout(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    script = [sys.executable, str(root / "scripts" / "ship_model.py")]
    guided = _save_teacher(tmp_path / "guided", seed=0, audio_dropout=0.2)
    done = subprocess.run(
        [*script, str(guided), str(tmp_path / "out"), "--audio-guidance", "2"], check=False, capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()
    meta = json.loads((tmp_path / "out" / CONFIG_NAME).read_text())["extra"]
    assert meta["audio_guidance"] == 2.0 and meta["audio_dropout"] == 0.2
    shipped = DiffTalkModel.from_pretrained(tmp_path / "out")
    assert shipped.config == DiffTalkModel.from_pretrained(guided).config
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(tmp_path / "out" / "weights.safetensors").values()} == {torch.float16}
    plain = _save_teacher(tmp_path / "plain", seed=0)
    refused = subprocess.run(
        [*script, str(plain), str(tmp_path / "no"), "--audio-guidance", "2"], check=False, capture_output=True
    )
    assert refused.returncode != 0 and b"train.audio_dropout" in refused.stderr
    assert not (tmp_path / "no").exists()


@pytest.mark.slow
def test_a_student_with_a_unet_window_starts_from_the_teachers_weights_and_records_its_window(
    prepared_dataset, teacher, tmp_path
):
    overrides = {
        "distill.steps": 1,
        "distill.method": "direct",
        "distill.teacher_steps": 2,
        "distill.learning_rate": 1e-9,
    }
    config = _config(prepared_dataset, tmp_path / "run", teacher, **overrides, **{"distill.student_unet_window": 1})
    result = train_distill(config, progress=False)
    student = DiffTalkModel.from_pretrained(result.model_dir)
    assert student.config.unet_window == 1
    assert student.config == replace(DiffTalkModel.from_pretrained(teacher).config, {"unet_window": 1})
    start = DiffTalkModel.from_pretrained(teacher).unet.conv_in.weight
    assert (student.unet.conv_in.weight - start).abs().max() < 1e-5  # one step at lr 1e-9 from the teacher's weights
    # a windowed student of this teacher is a valid init for another run (the window may differ)
    again = _config(
        prepared_dataset, tmp_path / "run2", teacher, **{**overrides, "distill.init": str(result.model_dir)}
    )
    assert DiffTalkModel.from_pretrained(train_distill(again, progress=False).model_dir).config.unet_window is None
