"""The engine thread: owns the models, paces frames, reads the newest audio, reports everything.

One persistent thread per show. It builds the models itself (so they live on the thread that
uses them), then loops: take the newest controls from the mailbox, run a model step when one
is due (newest audio window of each source -> W+ keyframe), render the frame for the display
deadline from the interpolated W+ (one model period behind, so every frame lies between two
real keyframes), publish it to a newest-wins slot, and spend spare time on prompt searches.
Every exception is caught, counted, logged and handed to ``on_error``; the loop goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from model.atlas import AtlasSettings
from model.bundle import Bundle
from vjapp.audio import AudioSource, resample, to_mono
from vjapp.audio.rhythm import BeatClock, RhythmAnalyzer, RhythmSnapshot, TapTempo
from vjapp.engine.controls import Controls
from vjapp.engine.frames import resolve_device, resolve_dtype
from vjapp.engine.interp import Clock, FramePacer, WallClock
from vjapp.engine.mailbox import LatestSlot, Mailbox
from vjapp.engine.pipeline import PipelineConfig
from vjapp.engine.quantize import ChangeQuantizer
from vjapp.engine.show import Show, ShowConfig
from vjapp.engine.stats import EngineStats

log = logging.getLogger(__name__)


class _NoTempo:
    """The audio tracker's place before any audio arrived."""

    name = "audio"

    def beat_at(self, t: float) -> None:
        return None


@dataclass(frozen=True)
class Frame:
    """One rendered frame, as the output window and the recorder receive it."""

    image: np.ndarray  # [H, W, 3] uint8
    index: int  # display frame number
    t: float  # engine clock time the frame represents (s)
    latency_ms: float  # sound in (the audio this frame reacted to entered the ring) -> frame ready


@dataclass(frozen=True)
class Analysis:
    """What the model heard at one step, for the scope (the UI never calls a model)."""

    mel: np.ndarray | None  # [n_mels, T] float32 in [0, 1], low bins first; None in silence
    loudness: float  # 0..1 as used for reactivity
    loudness_db: float  # RMS dBFS of the mixed input
    motion: float  # size of this step's latent change
    t: float  # engine clock time of the step


@dataclass
class EngineConfig:
    device: str = "auto"  # auto | cpu | cuda[:N]
    dtype: str = "auto"  # synthesis precision: auto | fp32 | bf16 | fp16
    threads: int = 0  # torch CPU threads for the engine (0: leave torch's default)
    interp: str = "cubic"  # linear | cubic
    error_backoff_s: float = 0.2  # pause after a failed iteration, so errors cannot spin the CPU
    atlas_samples: int = AtlasSettings.samples  # the latent atlas looked up in the cache (vjapp.atlas_build --samples)


class Engine:
    """Runs a :class:`Show` on its own thread, fed by audio sources and a controls mailbox.

    Args:
        bundle: the models (moved to the engine's device on its thread).
        controls: newest-wins controls written by the UI, OSC and presets.
        sources: audio sources (each with ``ring`` and ``sample_rate``), mixed by
            ``Controls.source_weights``; more can be set later with :meth:`set_sources`.
        on_frame: called on the engine thread with each :class:`Frame` (keep it cheap: e.g. emit
            a Qt signal); frames are also published to :attr:`frames`.
        on_error: called on the engine thread with a message for every error.
    """

    def __init__(
        self,
        bundle: Bundle,
        controls: Mailbox[Controls],
        sources: Sequence[AudioSource] = (),
        config: EngineConfig | None = None,
        on_frame: Callable[[Frame], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        self.bundle = bundle
        self.controls = controls
        self._sources: Mailbox[tuple[AudioSource, ...]] = Mailbox(tuple(sources))
        self.on_frame = on_frame
        self.on_error = on_error
        self.clock: Clock = clock or WallClock()
        self.stats = EngineStats()
        self.frames: LatestSlot[Frame] = LatestSlot()
        self.analysis: LatestSlot[Analysis] = LatestSlot()
        self.ready = threading.Event()  # set once the models are built (or failed to)
        self.last_error: str | None = None
        self.show: Show | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._frame_index = 0
        # the rhythm layer: analysis of the main source's newest audio, tempo, quantised changes
        self.tap = TapTempo()
        self.rhythm: LatestSlot[RhythmSnapshot] = LatestSlot()
        self._analyzer: RhythmAnalyzer | None = None
        self.beat_clock = BeatClock(_NoTempo(), self.tap)
        self._rhythm_source: AudioSource | None = None
        self._read_index = 0
        self._last_read: float | None = None
        # analysed hops waiting to be heard: (due time, band strengths, loudness, beat state)
        self._hop_queue: deque[tuple[float, tuple[float, float, float], float, Any]] = deque()
        self.quantizer = ChangeQuantizer()
        self._atlas_request = threading.Event()  # attach the cached atlas at the next iteration
        self.atlas_attached: Callable[[bool, str], None] | None = None  # (scene on, what happened), engine thread

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("engine already started")
        self._thread = threading.Thread(target=self._main, name="vjapp-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if isinstance(self.clock, WallClock):
            self.clock.interrupt()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("engine thread did not stop within %.1f s", timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def set_sources(self, sources: Sequence[AudioSource]) -> None:
        """Swap the audio sources; the engine picks them up at its next model step."""
        self._sources.put(tuple(sources))

    def attach_atlas(self) -> None:
        """Any thread: load the generator's cached latent atlas (built by ``python -m vjapp.atlas_build``)
        and give it to the show at the engine's next iteration; :attr:`atlas_attached` hears how it went."""
        self._atlas_request.set()

    def _attach_atlas_now(self, show: Show) -> None:
        from vjapp.engine.show import scene_atlas

        self._atlas_request.clear()
        atlas = scene_atlas(self.bundle, build=False, settings=AtlasSettings(samples=self.config.atlas_samples))
        if atlas is None:
            on, text = False, "no latent atlas is cached for this generator: sound meaning stays off"
        else:
            on = show.attach_atlas(atlas)
            reason = show.meaning_off_reason()
            text = (f"latent atlas attached ({len(atlas)} pictures): the sound's meaning moves this generator"
                    if on else f"latent atlas attached for text prompts; sound meaning off: {reason}")
        log.info(text)
        if self.atlas_attached is not None:
            self.atlas_attached(on, text)

    def tap_tempo(self) -> None:
        """A tap (button, pad, OSC): any thread."""
        self.tap.tap(self.clock.now())

    # ------------------------------------------------------------------ thread
    def _report(self, message: str) -> None:
        self.last_error = message
        self.stats.count("errors")
        if self.on_error is not None:
            try:
                self.on_error(message)
            except Exception:  # a broken error handler must not kill the engine
                log.exception("on_error handler failed")

    def _main(self) -> None:
        try:
            self._setup()
        except Exception as exc:
            log.exception("engine setup failed")
            self._report(f"engine could not start: {exc}")
            self.ready.set()
            return
        self.ready.set()
        try:
            self._loop()
        except BaseException as exc:  # the loop itself catches per iteration; this is the last net
            log.exception("engine loop died")
            self._report(f"engine stopped: {exc}")

    def _setup(self) -> None:
        if self.config.threads > 0:
            torch.set_num_threads(self.config.threads)
        torch.set_flush_denormal(True)
        try:
            device = resolve_device(self.config.device)
        except RuntimeError as exc:  # e.g. --device cuda on a machine without one: play on the CPU
            self._report(f"{exc}; running on the CPU instead")
            device = torch.device("cpu")
        dtype = resolve_dtype(self.config.dtype, device)
        self.bundle.to(device)
        pipeline = PipelineConfig(window_seconds=self.bundle.info.segment_seconds)
        self.show = Show(self.bundle, device, dtype, ShowConfig(pipeline=pipeline, interp=self.config.interp,
                                                         atlas=AtlasSettings(samples=self.config.atlas_samples)),
                         self.stats)
        for note in self.show.messages:
            self._report(note)

    def _loop(self) -> None:
        show = self.show
        assert show is not None
        version, controls = self.controls.get()
        show.apply(controls, self.clock.now(), immediate=True)
        self.beat_clock.choice = controls.rhythm.tempo_source  # also when set before the loop began
        shown = controls  # what the show plays (quantised picture changes may still be pending)
        pacer = FramePacer(controls.fps, self.clock)
        pacer.start()
        next_step = self.clock.now()
        notes_seen = len(show.messages)
        while not self._stop.is_set():
            try:
                if self._atlas_request.is_set():
                    self._attach_atlas_now(show)
                newer = self.controls.get_if_newer(version)
                step_dt = 1.0 / controls.model_rate
                if newer is not None:
                    version, controls = newer
                    now = self.clock.now()
                    self.beat_clock.choice = controls.rhythm.tempo_source
                    shown = self.quantizer.submit(shown, controls, now, self.beat_clock.beat_at(now))
                    show.apply(shown, now)
                    if controls.fps != pacer.fps:
                        pacer.set_fps(controls.fps)
                    step_dt = 1.0 / controls.model_rate
                now = self.clock.now()
                landing = self.quantizer.due(now, lead=step_dt)  # shown one model period later: on the beat
                if landing is not None:
                    shown = landing
                    show.apply(shown, now, fade_s=min(0.25, 0.5 * step_dt + 0.1))
                if now >= next_step:
                    result = show.model_step(now, self._windows(show))
                    mel = None if result.mel is None else result.mel.float().cpu().numpy()
                    self.analysis.publish(Analysis(mel, result.loudness, result.loudness_db, result.motion, now))
                    next_step = max(next_step + step_dt, now)  # no catch-up bursts after a stall
                elif pacer.next_deadline() - now > 0.004:
                    show.background_work(now)
                tick = pacer.wait()
                if self._stop.is_set():
                    break
                heard_from = self._listen(show)  # the newest audio -> pulse envelopes, tempo
                delay = step_dt  # semantic layer one model period behind: always between two keyframes
                image = show.frame_at(tick.deadline - delay, show.pulse())
                done = self.clock.now()
                latency_ms = (done - heard_from) * 1e3
                self.stats.record_latency(latency_ms)
                if tick.skipped:
                    self.stats.count("skipped_frames", tick.skipped)
                frame = Frame(image, self._frame_index, tick.deadline, latency_ms)
                self._frame_index += 1
                self.frames.publish(frame)
                if self.on_frame is not None:
                    self.on_frame(frame)
                if len(show.messages) > notes_seen:
                    for note in show.messages[notes_seen:]:
                        self._report(note)
                    notes_seen = len(show.messages)
            except Exception as exc:
                log.exception("engine iteration failed")
                self._report(f"engine error: {exc}")
                time.sleep(self.config.error_backoff_s)

    def _main_source(self, controls: Controls) -> AudioSource | None:
        """The source with the largest mix weight (the first of equals): the one the rhythm layer hears."""
        _, sources = self._sources.get()
        weights = list(controls.source_weights) + [0.0] * len(sources)
        live = [(weights[i], i, s) for i, s in enumerate(sources) if weights[i] > 0.0]
        return max(live, key=lambda x: (x[0], -x[1]))[2] if live else None

    def _listen(self, show: Show) -> float:
        """Feed the main source's audio since the last frame to the rhythm analysis and the pulse
        envelopes. Returns the mean engine time at which that audio entered the ring (the newest
        moment when there was no new audio), plus the source's ``heard_latency``: the frame's
        latency is then measured sound in (heard) -> frame out.

        A file played to the speakers is heard ``heard_latency`` after it enters the ring: its hops
        are applied that much later, so the picture moves with what the audience hears.
        """
        now = self.clock.now()
        src = self._main_source(show.controls)
        if src is None:
            show.pulses.decay(now - (self._last_read or now), show.controls.rhythm.release)
            self._last_read = now
            return now
        rate = int(src.sample_rate)
        if src is not self._rhythm_source or self._analyzer is None or self._analyzer.sample_rate != rate:
            self._rhythm_source = src
            self._analyzer = RhythmAnalyzer(rate)
            self.beat_clock.audio = self._analyzer
            self._read_index = src.ring.write_index
            self._hop_queue.clear()
            self._last_read = now
        analyzer = self._analyzer
        got = src.ring.read_since(self._read_index, max_frames=rate)  # at most a second per frame
        self._read_index = got.end
        prev = self._last_read if self._last_read is not None else now
        self._last_read = now
        hops = analyzer.feed(to_mono(got.data), now) if got.data.shape[0] else []
        heard_delay = float(getattr(src, "heard_latency", 0.0) or 0.0)  # a file played to speakers
        loud = analyzer.onsets.loudness("fast")
        for h in hops:
            beat = self.beat_clock.beat_at(analyzer.from_stream(h.t))
            self._hop_queue.append((now + heard_delay, h.strength, loud, beat))
        due = []
        while self._hop_queue and self._hop_queue[0][0] <= now:
            due.append(self._hop_queue.popleft())
        if due:
            for _, strength, level, beat in due:  # each hop with the loudness it was heard at
                show.listen([strength], analyzer.onsets.hop_s, level, [beat])
        else:
            show.pulses.decay(now - prev, show.controls.rhythm.release)
        self.rhythm.publish(analyzer.snapshot(now, self.beat_clock))
        return 0.5 * (prev + now) + heard_delay if hops else now

    def _windows(self, show: Show) -> list[torch.Tensor]:
        """The newest audio window of each source, mono, at the model's rate."""
        _, sources = self._sources.get()
        out: list[torch.Tensor] = []
        seconds = show.sound.window_samples / show.sound.sample_rate
        for src in sources:
            rate = int(src.sample_rate)
            n = min(int(round(seconds * rate)), src.ring.capacity)
            block, _ = src.ring.latest_copy(n)
            mono = to_mono(block)
            out.append(torch.from_numpy(resample(mono, rate, show.sound.sample_rate, quality="MQ")))
        return out
