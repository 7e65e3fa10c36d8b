"""``vjapp render IN -o OUT.mp4``: the live engine's show, driven by a file as fast as it can go.

Time is counted in audio samples, not wall time: model steps happen at ``k / model_rate``
seconds, each reading the audio window that ends there, and frame ``i`` shows the latent at
``i / fps``. Offline we may look ahead one model step, so every frame is interpolated between
two real keyframes. The input audio is muxed in (AAC), the first frame is at t=0, and the
video lasts as long as the audio to within one frame.
"""

from __future__ import annotations

import argparse
import logging
import math
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vjapp.audio import AudioDecodeError, decode_audio, resample, to_mono
from vjapp.engine.controls import ControlError, Controls, size_from_text

log = logging.getLogger(__name__)

FRAME_BATCH = 4  # frames synthesized per generator call (batching was ~15% faster per frame on CPU)
HEAR_BATCH = 64  # model steps whose audio windows go through the mel + E_a in one batch


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="audio file (WAV, FLAC, OGG, MP3, or a video's audio track)")
    p.add_argument("-o", "--output", required=True, help="MP4 file to write")
    p.add_argument("--bundle", default=None, help="bundle directory (default: the embedded default)")
    p.add_argument("--prompt", default="", help="text prompt for the base latent")
    p.add_argument("--seed", type=int, default=0, help="seed of the base latent")
    p.add_argument("--fps", type=float, default=30.0, help="video frames per second")
    p.add_argument("--size", default="native", help="output size in pixels (power of two) or 'native'")
    p.add_argument("--model-rate", type=float, default=None, help="model steps per second (default: the bundle's)")
    p.add_argument("--gain", type=float, default=1.0, help="overall reactivity to sound")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="synthesis precision (auto: bf16 on CPU, fp16 on CUDA)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@dataclass
class RenderReport:
    path: Path
    frames: int
    seconds: float  # audio duration
    wall_seconds: float
    bundle: str

    @property
    def speed(self) -> float:
        """Rendered seconds of video per wall-clock second."""
        return self.seconds / self.wall_seconds if self.wall_seconds > 0 else math.inf


def render_file(
    input_path: str | Path,
    output_path: str | Path,
    controls: Controls,
    bundle_path: str | Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
    model_rate: float | None = None,
    progress: bool = True,
) -> RenderReport:
    """Render ``input_path`` to ``output_path``; raises AudioDecodeError, CheckpointError, RecordingError."""
    from tqdm import tqdm

    from vjapp.bundles import SHOW_PARTS, open_bundle
    from vjapp.engine.frames import resolve_device, resolve_dtype
    from vjapp.engine.show import Show, ShowConfig
    from vjapp.engine.pipeline import Heard, PipelineConfig
    from vjapp.output.mp4 import Mp4Writer

    started = time.perf_counter()
    torch.set_flush_denormal(True)  # denormals slow CPU convolutions several-fold (this thread only)
    audio = decode_audio(input_path)
    dev = resolve_device(device)
    slots = (controls.mix.coarse, controls.mix.mid, controls.mix.fine)
    needs_clip = bool(controls.prompt) or any(s.source_kind == "prompt" and s.prompt for s in slots)
    bundle, where = open_bundle(bundle_path, dev, parts=None if needs_clip else SHOW_PARTS)
    log.info("rendering with %s", where)
    rate = float(model_rate or bundle.info.model_rate)
    controls = controls.replace(model_rate=rate)
    show = Show(bundle, dev, resolve_dtype(dtype, dev),
                ShowConfig(pipeline=PipelineConfig(window_seconds=bundle.info.segment_seconds)))
    show.resolve_prompts(controls)
    show.apply(controls, 0.0, immediate=True)  # start on the requested picture, no fade-in

    sr_model = show.sound.sample_rate
    mono = torch.from_numpy(resample(to_mono(audio.samples), audio.sample_rate, sr_model))
    fps = float(controls.fps)
    n_frames = max(1, int(round(audio.duration * fps)))
    size = show.renderer.size
    step_dt = 1.0 / rate
    window = show.sound.window_samples
    weight = float(controls.source_weights[0])
    heard: dict[int, Heard] = {}  # precomputed E_a of upcoming steps (E_a has no state: batch it)
    next_step = 0  # index k of the next model step at k / rate

    def window_at(k: int) -> torch.Tensor:
        end = min(int(round(k * step_dt * sr_model)), mono.numel())
        w = mono[max(0, end - window):end]
        return torch.nn.functional.pad(w, (window - w.numel(), 0))

    def model_step_until(t: float) -> None:
        nonlocal next_step
        while next_step * step_dt <= t:
            if next_step not in heard:
                ks = range(next_step, next_step + HEAR_BATCH)
                heard.clear()
                heard.update(zip(ks, show.sound.hear_many(torch.stack([window_at(k) for k in ks]), weight)))
            show.model_step(next_step * step_dt, [], heard=heard[next_step])
            next_step += 1

    channels = audio.channels if audio.channels <= 2 else 2
    pcm = audio.samples if audio.channels <= 2 else audio.samples[:, :2]
    out = Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with Mp4Writer(out, size, size, fps, audio_rate=audio.sample_rate, audio_channels=channels) as writer:
        encoder = _EncoderThread(writer)
        bar = tqdm(total=n_frames, unit="frame", desc="render", disable=not progress, file=sys.stderr,
                   mininterval=0.1 if sys.stderr.isatty() else 5.0)
        audio_pos = 0
        try:
            for first in range(0, n_frames, FRAME_BATCH):
                idx = range(first, min(first + FRAME_BATCH, n_frames))
                times = [i / fps for i in idx]
                model_step_until(times[-1] + step_dt)  # one step ahead: frames sit between real keyframes
                for i, frame in zip(idx, show.frames_at(times)):
                    audio_end = audio.frames if i == n_frames - 1 else \
                        min(audio.frames, int(round((i + 1) / fps * audio.sample_rate)))
                    encoder.put(frame, pcm[audio_pos:audio_end] if audio_end > audio_pos else None)
                    audio_pos = max(audio_pos, audio_end)
                    bar.update(1)
        finally:
            encoder.finish()
            bar.close()
    return RenderReport(out, n_frames, audio.duration, time.perf_counter() - started, where)


class _EncoderThread:
    """Encodes on its own thread, so H.264/AAC encoding overlaps the next frame's synthesis.

    A small bounded queue keeps memory flat; an encoder error is raised in the rendering thread
    at the next :meth:`put` or at :meth:`finish`.
    """

    def __init__(self, writer: object, depth: int = 4) -> None:
        self._writer = writer
        self._queue: queue.Queue[tuple[np.ndarray, np.ndarray | None] | None] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="vjapp-render-encoder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain after a failure so put() never blocks forever
            try:
                frame, pcm = item
                self._writer.write_video(frame)  # type: ignore[attr-defined]
                if pcm is not None:
                    self._writer.write_audio(pcm)  # type: ignore[attr-defined]
            except BaseException as exc:  # handed to the rendering thread
                self._error = exc

    def put(self, frame: np.ndarray, pcm: np.ndarray | None) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((frame, pcm))

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def run(args: argparse.Namespace) -> int:
    from model.formats import CheckpointError
    from vjapp.output.mp4 import RecordingError

    try:
        controls = Controls().replace(prompt=args.prompt, seed=args.seed, fps=args.fps,
                                      size=size_from_text(args.size), gain=args.gain)
        report = render_file(args.input, args.output, controls, args.bundle, args.device, args.dtype,
                             args.model_rate, progress=not args.quiet)
    except (AudioDecodeError, CheckpointError, RecordingError, ControlError, ValueError, RuntimeError) as exc:
        print(f"vjapp render: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {report.path}: {report.frames} frames, {report.seconds:.2f} s of audio, "
          f"{report.wall_seconds:.1f} s wall ({report.speed:.2f}x real time) with {report.bundle}")
    return 0
