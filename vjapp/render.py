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
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vjapp.audio import AudioDecodeError, to_mono
from vjapp.audio.stream import AudioStream, downmix_stereo, open_audio
from vjapp.engine.controls import ControlError, Controls, aspect_arg, size_from_text

log = logging.getLogger(__name__)

# Frames synthesized per generator call: 16 for the default's 128 px generator (the demo render
# 11.7-12.7 s at 4 -> 9.8-10.2 s at 16 with the encoder queue below; 32 was slower again), fewer
# for larger generators (the same pixels per call: a batch buys little once the convolutions are
# large, and costs memory).
FRAME_BATCH = 16
FRAME_BATCH_PIXELS = FRAME_BATCH * 128 * 128


def frame_batch(resolution: int) -> int:
    """Frames per synthesis call for a generator of ``resolution`` px (1..FRAME_BATCH)."""
    return max(1, min(FRAME_BATCH, FRAME_BATCH_PIXELS // max(1, int(resolution)) ** 2))


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` only where X says something: an option whose help says what its
    absence means (``--bundle``, ``--model-rate``) keeps its own words, not "(default: None)";
    an empty prompt and a flag's False are not shown."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default == "" or isinstance(action, argparse._StoreTrueAction):
            return action.help
        return super()._get_help_string(action)


def _threads(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0 (0: every core), got {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = _HelpFormatter
    p.add_argument("input", help="audio file (WAV, FLAC, OGG, MP3, or a video's audio track)")
    p.add_argument("-o", "--output", required=True, help="MP4 file to write")
    p.add_argument("--bundle", default=None,
                   help="bundle directory, or a StyleGAN2 .pkl/.pt to import (default: the embedded default)")
    p.add_argument("--clip", default=None, metavar="ARCH:PATH",
                   help="real OpenCLIP weights (a local file) for an imported generator's latent atlas")
    p.add_argument("--atlas-samples", type=int, default=4096, metavar="N",
                   help="pictures in an imported generator's latent atlas (built here, cached beside its bundle)")
    p.add_argument("--prompt", default="", help="text prompt for the base latent (default: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the base latent")
    p.add_argument("--fps", type=float, default=30.0, help="video frames per second")
    p.add_argument("--size", default="native", help="output size in pixels (power of two) or 'native'")
    p.add_argument("--aspect", type=aspect_arg, default="1:1",
                   help="frame shape (width:height): 1:1, 16:9, 4:3 or 9:16; --size is the short side")
    p.add_argument("--model-rate", type=float, default=None, help="model steps per second (default: the bundle's)")
    p.add_argument("--gain", type=float, default=1.0, help="overall reactivity to sound")
    p.add_argument("--device", default="auto", help="auto (CUDA, else Apple-silicon MPS, else CPU), cpu, mps or cuda[:N]")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="synthesis precision (auto: bf16 on CPU, fp16 on CUDA)")
    p.add_argument("--threads", type=_threads, default=0,
                   help="torch CPU threads (0: every core; on a busy machine fewer can be faster)")
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


class RenderInterrupted(Exception):
    """The render was stopped (SIGINT/SIGTERM, or KeyboardInterrupt) after its output was finished:
    ``kept`` is the playable file holding the ``rendered`` seconds, or None (nothing was written)."""

    def __init__(self, signum: int, rendered: float, total: float, kept: Path | None) -> None:
        self.signum, self.rendered, self.total, self.kept = signum, rendered, total, kept
        where = f"wrote {kept} (playable, {rendered:.1f} s)" if kept else "no file written"
        super().__init__(f"interrupted at {rendered:.1f} s of {total:.1f} s; {where}")


class StopRequested(BaseException):
    """Raised by the signal handlers :class:`SignalStop` installs (SIGTERM like SIGINT)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class SignalStop:
    """SIGINT and SIGTERM as a clean stop of a render (install from the main thread).

    Before the frames start (loading models) a signal raises :class:`StopRequested` at once.
    While frames are rendered it only sets :attr:`signum`; the frame loop checks it between
    batches and finishes the file, so no signal lands inside the encoder or the muxer.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.polled = False  # True while the frame loop checks signum itself
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum
            if not self.polled:
                raise StopRequested(signum)

    def __enter__(self) -> SignalStop:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _Soundtrack:
    """The input file, read in blocks as the render needs it: the pcm for the muxer (in order,
    channels folded to stereo when there are more than 2) and the mono mix at the model's rate,
    of which only the last ``keep`` samples before the oldest window still needed are kept.
    Memory does not depend on the file's length."""

    BLOCK_SECONDS = 1.0

    def __init__(self, stream: AudioStream, model_rate: int) -> None:
        import soxr

        self.stream = stream
        self.rate = stream.sample_rate
        self.channels = stream.channels if stream.channels <= 2 else 2
        self.model_rate = model_rate
        self._resampler = None if model_rate == self.rate else \
            soxr.ResampleStream(self.rate, model_rate, 1, dtype="float32", quality="HQ")
        self._block = max(1024, int(self.BLOCK_SECONDS * self.rate))
        self.read_frames = 0  # file frames read so far
        self.eof = False
        self._pcm: list[np.ndarray] = []  # pcm not yet handed to the muxer, in order
        self._pcm_start = 0  # file frame of the first pending pcm sample
        self._mono = np.zeros(0, np.float32)  # model-rate mono, samples [mono_start, mono_end)
        self.mono_start = 0

    @property
    def mono_end(self) -> int:
        return self.mono_start + self._mono.size

    def _read_block(self) -> None:
        block = self.stream.read(self._block)
        last = block.shape[0] < self._block
        if block.shape[0]:
            self._pcm.append(block if block.shape[1] <= 2 else downmix_stereo(block))
            self.read_frames += block.shape[0]
        mono = to_mono(block)
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono, last=last)
        if mono.size:
            self._mono = np.concatenate([self._mono, mono])
        self.eof = last

    def mono_until(self, end: int) -> None:
        """Read until the model-rate mono reaches sample ``end`` (or the file ends)."""
        while self.mono_end < end and not self.eof:
            self._read_block()

    def frames_until(self, frame: int) -> None:
        """Read until the file is read up to ``frame`` (or ends)."""
        while self.read_frames < frame and not self.eof:
            self._read_block()

    def window(self, end: int, size: int) -> np.ndarray:
        """Mono samples ``[end - size, end)`` at the model rate, zeros before the start; ``end``
        is clamped to the end of the file, as the model hears silence after it."""
        self.mono_until(end)
        end = min(end, self.mono_end)
        lo = max(0, end - size)
        if lo < self.mono_start:
            raise RuntimeError(f"model window at {lo} was dropped (kept from {self.mono_start})")
        w = self._mono[lo - self.mono_start:end - self.mono_start]
        return np.pad(w, (size - w.size, 0)) if w.size < size else w

    def forget_mono_before(self, sample: int) -> None:
        if sample > self.mono_start:
            cut = min(sample, self.mono_end) - self.mono_start
            self._mono = self._mono[cut:].copy()
            self.mono_start += cut

    def take_pcm(self, end: int) -> np.ndarray | None:
        """Pcm frames from the last taken one up to ``end`` (file frames), or None if none."""
        self.frames_until(end)
        end = min(end, self.read_frames)
        n = end - self._pcm_start
        if n <= 0:
            return None
        pieces, got = [], 0
        while got < n:
            head = self._pcm[0]
            k = min(n - got, head.shape[0])
            pieces.append(head[:k])
            got += k
            if k == head.shape[0]:
                self._pcm.pop(0)
            else:
                self._pcm[0] = head[k:]
        self._pcm_start = end
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def _partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def render_file(
    input_path: str | Path,
    output_path: str | Path,
    controls: Controls,
    bundle_path: str | Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
    model_rate: float | None = None,
    progress: bool = True,
    stop: SignalStop | None = None,
    clip: tuple[str, str] | None = None,
    atlas_samples: int = 4096,
) -> RenderReport:
    """Render ``input_path`` to ``output_path``; raises AudioDecodeError, CheckpointError, RecordingError.

    The audio is streamed (memory independent of its length). The MP4 is written to
    ``OUTPUT.partial`` and moved into place when finished. Stopped by ``stop``'s signal (or a
    KeyboardInterrupt) the file is finished as far as it got and moved into place, or removed if
    it holds no frame; then :class:`RenderInterrupted` says which. On an error it is removed.

    ``bundle_path`` may be a .pkl/.pt generator: it is converted and played with CLIP/F_a of the
    default bundle (:mod:`vjapp.imported`), its latent atlas (``atlas_samples`` pictures, ``clip``:
    other CLIP weights) built here with progress in the log and cached beside its bundle.
    """
    from tqdm import tqdm

    from model.atlas import AtlasSettings
    from vjapp.bundles import open_bundle
    from vjapp.engine.show import scene_atlas
    from vjapp.imported import import_generator, imported_dir, is_generator_file
    from vjapp.engine.frames import resolve_device, resolve_dtype
    from vjapp.engine.show import Show, ShowConfig
    from vjapp.engine.offline import ModelStepper, RhythmFollower, latents_at
    from vjapp.engine.pipeline import PipelineConfig
    from vjapp.output.mp4 import Mp4Writer

    started = time.perf_counter()
    torch.set_flush_denormal(True)  # denormals slow CPU convolutions several-fold (this thread only)
    with open_audio(input_path) as stream:
        if stream.channels > 2:
            log.warning("%s: %d channels; the soundtrack folds all of them into stereo", stream.path,
                        stream.channels)
        dev = resolve_device(device)
        slots = (controls.mix.coarse, controls.mix.mid, controls.mix.fine)
        needs_clip = bool(controls.prompt) or any(s.source_kind == "prompt" and s.prompt for s in slots)
        imported = is_generator_file(bundle_path)
        if imported:
            base, base_name = open_bundle(None, "cpu")
            bundle_path = import_generator(bundle_path, base, imported_dir(), clip, base_name)
        # without a text prompt CLIP is built only if a cache it serves is missing (model/lazy_clip.py)
        bundle, where = open_bundle(bundle_path, dev, lazy_clip=not needs_clip)
        log.info("rendering with %s", where)
        rate = float(model_rate or bundle.info.model_rate)
        controls = controls.replace(model_rate=rate)
        last_log = [0.0]

        def atlas_progress(done: int, total: int) -> None:
            if time.perf_counter() - last_log[0] > 2.0 or done == total:
                last_log[0] = time.perf_counter()
                log.info("latent atlas: %d / %d pictures", done, total)

        show = Show(bundle, dev, resolve_dtype(dtype, dev),
                    ShowConfig(pipeline=PipelineConfig(window_seconds=bundle.info.segment_seconds),
                               build_atlas=imported, atlas=AtlasSettings(samples=atlas_samples)),
                    atlas=scene_atlas(bundle, True, AtlasSettings(samples=atlas_samples), atlas_progress)
                    if imported else None)
        for note in show.messages:
            log.warning(note)
        show.resolve_prompts(controls)
        show.apply(controls, 0.0, immediate=True)  # start on the requested picture, no fade-in

        sr_model = show.sound.sample_rate
        track = _Soundtrack(stream, sr_model)
        fps = float(controls.fps)
        n_estimate = max(1, int(round(stream.duration * fps)))  # the progress bar's total
        height, width = show.renderer.shape  # the short side is --size; the MP4 keeps the aspect
        window = show.sound.window_samples
        weight = float(controls.source_weights[0])
        rhythm = RhythmFollower(show, sr_model)  # onsets and tempo on the sample clock

        def windows(ks: range) -> torch.Tensor:
            """The model windows of steps ``ks`` from the streamed file; what no later step or the
            rhythm layer needs is then dropped (memory stays bounded)."""
            track.mono_until(steps.window_end(ks[-1]))
            stacked = np.stack([track.window(steps.window_end(k), window) for k in ks])
            track.forget_mono_before(min(steps.window_end(ks[0]) - window, rhythm.position))
            return torch.from_numpy(stacked)

        steps = ModelStepper(show, rate, windows, weight)

        out = Path(output_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = _partial_path(out)
        frames_done = 0
        signum: int | None = None
        if stop is not None:
            stop.polled = True
        try:
            writer = Mp4Writer(partial, width, height, fps, audio_rate=track.rate, audio_channels=track.channels)
            batch = frame_batch(show.renderer.fast.img_resolution)
            encoder = _EncoderThread(writer, depth=3 * batch)  # a whole batch waits while the next is made
            bar = tqdm(total=n_estimate, unit="frame", desc="render", disable=not progress, file=sys.stderr,
                       mininterval=0.1 if sys.stderr.isatty() else 5.0)
            try:
                n_frames: int | None = None  # known once the file's end is read
                i = 0
                while n_frames is None or i < n_frames:
                    if stop is not None and stop.signum is not None:
                        raise StopRequested(stop.signum)
                    # Read far enough to know whether this batch's frames exist.
                    track.frames_until(int(math.ceil((i + batch) / fps * track.rate)) + 1)
                    if track.eof and n_frames is None:
                        n_frames = max(1, int(round(track.read_frames / track.rate * fps)))
                        bar.total = n_frames
                    idx = range(i, i + batch if n_frames is None else min(i + batch, n_frames))
                    if not idx:
                        break
                    times = [k / fps for k in idx]
                    ws, cameras = latents_at(times, steps, rhythm, sr_model,
                                             lambda a, b: track.window(b, b - a) * weight, lambda: track.mono_end)
                    for k, frame in zip(idx, show.frames_of(ws, cameras)):
                        last = n_frames is not None and k == n_frames - 1
                        audio_end = track.read_frames if last else int(round((k + 1) / fps * track.rate))
                        if last:
                            track.frames_until(1 << 62)
                            audio_end = track.read_frames
                        encoder.put(frame, track.take_pcm(audio_end))
                        frames_done = k + 1
                        bar.update(1)
                    i = idx[-1] + 1
            finally:
                if stop is not None:
                    stop.polled = True  # from here a signal only waits for the file to be finished
                try:
                    encoder.finish()
                finally:
                    bar.close()
                    writer.close()
        except (KeyboardInterrupt, StopRequested) as exc:
            signum = exc.signum if isinstance(exc, StopRequested) else signal.SIGINT
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            if stop is not None:
                stop.polled = False
        seconds = frames_done / fps
        if signum is not None:
            kept: Path | None = None
            if frames_done > 0:
                os.replace(partial, out)
                kept = out
            else:
                partial.unlink(missing_ok=True)
            raise RenderInterrupted(signum, seconds, stream.duration, kept)
        os.replace(partial, out)
    return RenderReport(out, frames_done, track.read_frames / track.rate, time.perf_counter() - started, where)


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

    # Torch on every core by default: on this project's quiet 2-core machine the demo renders in
    # 11.9 s with two threads against 13.2 s with one (the encoder thread overlaps either way).
    # With other load on the machine, two torch threads made a render up to 5x slower than one
    # (OpenMP threads waiting on each other): then --threads 1.
    torch.set_num_threads(args.threads if args.threads > 0 else max(1, os.cpu_count() or 1))
    with SignalStop() as stop:
        try:
            controls = Controls().replace(prompt=args.prompt, seed=args.seed, fps=args.fps,
                                          size=size_from_text(args.size), aspect=args.aspect, gain=args.gain)
            clip = None
            if args.clip:
                from vjapp.gui import clip_spec

                try:
                    clip = clip_spec(args.clip)
                except argparse.ArgumentTypeError as exc:
                    raise ValueError(f"--clip: {exc}") from exc
            report = render_file(args.input, args.output, controls, args.bundle, args.device, args.dtype,
                                 args.model_rate, progress=not args.quiet, stop=stop, clip=clip,
                                 atlas_samples=args.atlas_samples)
        except (AudioDecodeError, CheckpointError, RecordingError, ControlError, ValueError, RuntimeError) as exc:
            print(f"vjapp render: error: {exc}; no file written", file=sys.stderr)
            return 1
        except RenderInterrupted as exc:
            print(f"vjapp render: {exc}", file=sys.stderr)
            return 128 + exc.signum
        except (KeyboardInterrupt, StopRequested) as exc:
            signum = exc.signum if isinstance(exc, StopRequested) else signal.SIGINT
            print("vjapp render: interrupted before rendering started; no file written", file=sys.stderr)
            return 128 + signum
    print(f"wrote {report.path}: {report.frames} frames, {report.seconds:.2f} s of audio, "
          f"{report.wall_seconds:.1f} s wall ({report.speed:.2f}x real time) with {report.bundle}")
    return 0
