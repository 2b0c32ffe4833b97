"""``difftalk app``: a gradio web UI to generate talking-head videos and verify watermarks.

Upload a video (dubbing) or a photo (portrait) and speech, or pick the built-in synthetic identity
and speech (:func:`difftalk.demo.render_synthetic_inputs`); choose the checkpoint (the shipped one-step demo
student, a folder or a Hugging Face Hub id), the sampler (Auto: the checkpoint's own) and its steps and
the main options; follow the progress; play and download the watermarked MP4. A second tab checks any
video for the watermark.

Uploads are checked against :class:`~difftalk.app_limits.UploadLimits` before anything is generated
(and described as soon as they arrive). The work is done by :mod:`difftalk.app_logic` (plain functions
that raise ``ValueError``); this module only builds the page and serves it. gradio is imported inside
the functions (``pip install 'difftalk[app]'``), so importing this module costs nothing.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any, Literal

from difftalk.app_limits import SOURCE_SUFFIXES, VIDEO_SUFFIXES, check_source, check_speech
from difftalk.app_logic import (
    INPUT_SYNTHETIC,
    INPUT_UPLOAD,
    SAMPLERS,
    SYNTHETIC_SECONDS,
    USER_ERRORS,
    AppConfig,
    GenerationRequest,
    PipelineCache,
    available_devices,
    preview_frame,
    run_generation,
    safe_text,
    verify_upload,
)
from difftalk.errors import MissingExtraError

if TYPE_CHECKING:
    import gradio

logger = logging.getLogger(__name__)


def import_gradio() -> Any:
    """The gradio module, or :class:`MissingExtraError` naming the pip command."""
    try:
        import gradio
    except ImportError:
        raise MissingExtraError(
            "the web app needs gradio, which is not installed: pip install 'difftalk[app]'"
        ) from None
    return gradio


CSS = """
#summary { font-size: 0.9em; }
.limits { font-size: 0.85em; opacity: 0.8; }
"""


def gradio_error(exc: BaseException) -> Exception:
    """``gradio.Error`` with the message of a user error (escaped), shown on the page without a traceback."""
    gr = import_gradio()
    error: Exception = gr.Error(safe_text(str(exc)), print_exception=False)
    return error


def build_app(config: AppConfig | None = None, cache: PipelineCache | None = None) -> gradio.Blocks:
    """The page: a *Generate* tab (inputs, model and sampling options, result) and a *Verify watermark* tab.

    Raises:
        MissingExtraError: gradio is not installed.
    """
    gr = import_gradio()
    from difftalk.cli_options import NOISE_HELP

    config = config or AppConfig()
    cache = cache or PipelineCache(config.max_pipelines)
    limits = config.limits
    defaults = GenerationRequest(checkpoint=config.checkpoint, device=config.device or "auto", sampler=config.sampler)
    devices = available_devices()
    devices += [] if defaults.device in devices else [defaults.device]

    def on_mode(mode: str) -> tuple[Any, Any]:
        upload = mode == INPUT_UPLOAD
        return gr.update(visible=upload), gr.update(visible=not upload)

    def on_reference(path: str | None) -> tuple[Any, str]:
        if not path:
            return gr.update(value=None, visible=False), ""
        try:
            described = check_source(path, limits).describe()
            return gr.update(value=preview_frame(path), visible=True), safe_text(described)
        except ValueError as exc:  # over a limit or unreadable: say so now, generating would refuse it too
            return gr.update(value=None, visible=False), f"⚠️ {safe_text(str(exc))}"

    def on_speech(path: str | None) -> str:
        if not path:
            return ""
        try:
            return safe_text(check_speech(path, limits).describe())
        except ValueError as exc:
            return f"⚠️ {safe_text(str(exc))}"

    def on_generate(
        mode: str, source: str | None, speech: str | None, synthetic_seed: float | None, checkpoint: str,
        sampler: str, steps: float, noise: Literal["independent", "shared"], progressive: bool, smoothing: float,
        seed: float | None, device: str, progress: Any = gr.Progress(track_tqdm=True),  # noqa: B008 (gradio's idiom)
    ) -> tuple[str, str, str]:  # fmt: skip
        request = GenerationRequest(
            source=source,
            speech=speech,
            synthetic=mode == INPUT_SYNTHETIC,
            synthetic_seed=int(synthetic_seed or 0),
            checkpoint=checkpoint or "",
            sampler=sampler,
            steps=int(steps),
            noise=noise,
            progressive_reference=progressive,
            temporal_smoothing=float(smoothing),
            seed=int(seed or 0),
            device=device,
        )
        try:
            result = run_generation(request, config, cache, progress)
        except USER_ERRORS as exc:
            raise gradio_error(exc) from None
        for warning in result.warnings:
            gr.Warning(safe_text(warning))
        return str(result.video), str(result.video), result.summary

    def on_verify(path: str | None) -> str:
        try:
            return verify_upload(path, limits)
        except USER_ERRORS as exc:
            raise gradio_error(exc) from None

    # uploads and served copies in gradio's cache are deleted after a day (the videos in output_dir stay)
    with gr.Blocks(title="difftalk", analytics_enabled=False, delete_cache=(86400, 86400)) as app:
        gr.Markdown(
            "## difftalk: speech-driven talking heads\n"
            "Dub a video or animate a photo with speech, using a conditional latent diffusion model. "
            "Every video made here carries an invisible watermark and is tagged as AI-generated."
        )
        with gr.Tab("Generate"), gr.Row(equal_height=False):
            with gr.Column(scale=1):
                mode = gr.Radio([INPUT_UPLOAD, INPUT_SYNTHETIC], value=INPUT_UPLOAD, label="Input")
                with gr.Group(visible=True) as upload_group:
                    source = gr.File(
                        label="Video (to dub) or photo (to animate) of one face",
                        file_types=list(SOURCE_SUFFIXES),
                        type="filepath",
                        elem_id="source",
                    )
                    preview = gr.Image(label="Reference", visible=False, interactive=False, height=180)
                    reference_info = gr.Markdown(elem_id="source-info")
                    speech = gr.Audio(
                        label="Speech (WAV, MP3, M4A, FLAC)", sources=["upload"], type="filepath", elem_id="speech"
                    )
                    speech_info = gr.Markdown(elem_id="speech-info")
                synthetic_seed = gr.Number(
                    value=defaults.synthetic_seed,
                    precision=0,
                    label="Identity seed",
                    info=f"a face and voice no training run used; {SYNTHETIC_SECONDS:g} s of new speech",
                    visible=False,
                )
                gr.Markdown(f"Upload limits: {limits.describe()}.", elem_classes="limits")
                checkpoint = gr.Textbox(
                    value=defaults.checkpoint,
                    label="Checkpoint",
                    placeholder="empty = the shipped one-step demo student (synthetic faces); a folder; owner/name "
                    "on the Hub",
                )
                with gr.Row():
                    sampler = gr.Dropdown(
                        list(SAMPLERS),
                        value=defaults.sampler,
                        label="Sampler",
                        info="Auto: the checkpoint's own (then Steps is ignored); LCM: distilled students only",
                    )
                    steps = gr.Slider(1, 200, value=defaults.steps, step=1, label="Steps", elem_id="steps")
                    seed = gr.Number(value=defaults.seed, precision=0, label="Seed", minimum=0)
                with gr.Row():
                    noise = gr.Radio(["shared", "independent"], value=defaults.noise, label="Noise", info=NOISE_HELP)
                    smoothing = gr.Slider(
                        0, 0.5, value=defaults.temporal_smoothing, step=0.05, label="Temporal smoothing"
                    )
                with gr.Row():
                    progressive = gr.Checkbox(
                        value=defaults.progressive_reference,
                        label="Progressive reference",
                        info="each generated frame is the next one's reference (off: the fixed first frame)",
                    )
                    device = gr.Dropdown(devices, value=defaults.device, label="Device")
                generate = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=1):
                video = gr.Video(
                    label="Result (watermarked MP4)", interactive=False, height=420, elem_id="result-video"
                )
                download = gr.File(label="Download", interactive=False, elem_id="download")
                summary = gr.Markdown(elem_id="summary")
        with gr.Tab("Verify watermark"), gr.Row():
            with gr.Column():
                to_verify = gr.File(
                    label="Any video (also re-encoded or cut)",
                    file_types=[*VIDEO_SUFFIXES],
                    type="filepath",
                    elem_id="verify-file",
                )
                verify = gr.Button("Verify watermark", variant="primary", elem_id="verify")
            verdict = gr.Textbox(label="Result", lines=3, interactive=False, elem_id="verdict")

        mode.change(on_mode, mode, [upload_group, synthetic_seed])
        source.change(on_reference, source, [preview, reference_info])
        speech.change(on_speech, speech, speech_info)
        options = [checkpoint, sampler, steps, noise, progressive, smoothing, seed, device]
        generate.click(
            on_generate,
            [mode, source, speech, synthetic_seed, *options],
            [video, download, summary],
            concurrency_limit=1,
        )
        verify.click(on_verify, to_verify, verdict)
    return app


def launch_app(
    config: AppConfig | None = None, host: str = "127.0.0.1", port: int = 7860, share: bool = False, block: bool = True
) -> tuple[gradio.Blocks, str]:
    """Serve :func:`build_app` on ``host:port`` (``share``: also through a public gradio.live link).

    Args:
        block: wait until the server is stopped (Ctrl-C); False returns at once (tests, notebooks).

    Returns:
        The running app (``.close()`` stops it) and its local URL.

    Raises:
        MissingExtraError: gradio is not installed. ValueError: the port cannot be served.
    """
    gr = import_gradio()
    importlib.import_module("difftalk.pipeline")  # torch and diffusers load now, not on the first click
    config = config or AppConfig()
    app = build_app(config)
    app.queue(default_concurrency_limit=1)
    config.output_dir.mkdir(parents=True, exist_ok=True)
    try:
        _, url, _ = app.launch(
            server_name=host,
            server_port=port,
            share=share,
            prevent_thread_lock=not block,
            allowed_paths=[str(config.output_dir.resolve())],
            max_file_size=round(config.limits.max_megabytes * 1e6),
            ssr_mode=False,
            theme=gr.themes.Soft(),
            css=CSS,
            footer_links=[],
        )
    except OSError as exc:  # the port is taken or the address cannot be bound
        raise ValueError(f"cannot serve on {host}:{port} ({exc}); pass another --port") from None
    return app, str(url)
