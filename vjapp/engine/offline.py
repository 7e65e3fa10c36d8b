"""The show on a sample clock: model steps and the rhythm layer driven by a decoded signal.

``vjapp render`` and the beat benchmark use it. Time is counted in samples, not wall time: model
step ``k`` at ``k / model_rate`` seconds reads the audio window that ends there, and frame ``i``
at ``i / fps`` shows the latent at that instant plus the pulses of the rhythm layer fed with the
audio up to that instant (causal, as live). Offline we may look ahead one model step, so every
frame lies between two real keyframes of the semantic layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from vjapp.audio.rhythm import RhythmAnalyzer
from vjapp.engine.pipeline import Heard
from vjapp.engine.show import Show

__all__ = ["OfflineShow", "RhythmFollower", "ModelStepper"]

HEAR_BATCH = 64  # model steps whose audio windows go through the mel + E_a in one batch


class ModelStepper:
    """The semantic layer on a sample clock: model step ``k`` at ``k / model_rate`` s hears the
    window that ends there. E_a has no state, so the windows of ``HEAR_BATCH`` upcoming steps go
    through the mel + E_a in one batch; ``windows(ks)`` returns them ``[len(ks), window_samples]``
    (from memory, or from a file being streamed)."""

    def __init__(self, show: Show, model_rate: float, windows: Callable[[range], torch.Tensor],
                 weight: float = 1.0) -> None:
        self.show = show
        self.step_dt = 1.0 / float(model_rate)
        self.windows = windows
        self.weight = weight
        self.next_step = 0  # index k of the next model step
        self._heard: dict[int, Heard] = {}

    def window_end(self, k: int) -> int:
        """The sample (at the model's rate) where step ``k``'s window ends."""
        return int(round(k * self.step_dt * self.show.sound.sample_rate))

    def until(self, t: float) -> None:
        """Every model step at or before ``t``."""
        while self.next_step * self.step_dt <= t:
            k = self.next_step
            if k not in self._heard:
                ks = range(k, k + HEAR_BATCH)
                self._heard.clear()
                sound = self.show.sound
                self._heard.update(zip(ks, sound.hear_many(self.windows(ks), self.weight,
                                                           sound.uses_offsets(self.show.controls))))
            self.show.model_step(k * self.step_dt, [], heard=self._heard[k])
            self.next_step += 1


class RhythmFollower:
    """The rhythm layer on a sample clock: feed it the audio in order, it steps the show's pulses."""

    def __init__(self, show: Show, sample_rate: int) -> None:
        self.show = show
        self.analyzer = RhythmAnalyzer(int(sample_rate))
        self.position = 0  # samples heard so far

    def hear(self, samples: np.ndarray) -> None:
        """The next mono samples (in order, any length): onsets, tempo, pulse envelopes."""
        hops = self.analyzer.feed(samples)
        self.position += int(samples.size)
        onsets = self.analyzer.onsets
        beats = [self.analyzer.tempo.beat_at_stream(h.t) for h in hops]
        self.show.listen([h.strength for h in hops], onsets.hop_s, onsets.loudness("fast"), beats)

    def pulse(self) -> torch.Tensor | None:
        p = self.show.pulse()
        return None if p is None else p.clone()

    def hear_until(self, t: float, rate: int, read: Callable[[int, int], np.ndarray], available: int) -> None:
        """Hear the audio up to time ``t`` (after the last call's), as live has heard it by then.
        ``read(start, end)`` gives those mono samples at ``rate``; ``available`` samples exist."""
        end = min(int(round(t * rate)), available)
        if end > self.position:
            self.hear(read(self.position, end))


def latents_at(times: Sequence[float], steps: ModelStepper, rhythm: RhythmFollower, rate: int,
               read: Callable[[int, int], np.ndarray], available: Callable[[], int]
               ) -> tuple[torch.Tensor, list[tuple[float, float, float]]]:
    """The W+ ``[B, L, C]`` and camera shown at each of ``times`` (ascending), as live shows them:
    the model stepped to one period past that time and no further (the interpolation sees the
    keyframes live would have, whatever the batch), the rhythm layer's pulse heard up to it.
    ``rate`` and ``read`` as :meth:`RhythmFollower.hear_until`; ``available()``: the samples that
    exist once the model has stepped (a streamed file is read as far as the steps needed)."""
    ws, cameras = [], []
    for t in times:
        steps.until(t + steps.step_dt)  # one step ahead: the frame sits between real keyframes
        rhythm.hear_until(t, rate, read, available())
        ws.append(steps.show.ws_at([t], [rhythm.pulse()])[0])
        cameras.append(steps.show.camera_now())  # the rhythm layer's push and turn at t
    return torch.stack(ws), cameras


@dataclass
class OfflineShow:
    """Drives ``show`` from ``model_audio`` (mono at the model's rate) and ``rhythm_audio`` (mono at
    ``rhythm_rate``: the file's own rate, for the onset analysis)."""

    show: Show
    model_audio: torch.Tensor  # [N] float32 at show.sound.sample_rate
    rhythm_audio: np.ndarray  # [M] float32 at rhythm_rate
    rhythm_rate: int
    model_rate: float
    weight: float = 1.0

    def __post_init__(self) -> None:
        self.rhythm = RhythmFollower(self.show, int(self.rhythm_rate))
        self.steps = ModelStepper(self.show, self.model_rate, self._windows, self.weight)

    def _windows(self, ks: range) -> torch.Tensor:
        window = self.show.sound.window_samples
        out = []
        for k in ks:
            end = min(self.steps.window_end(k), self.model_audio.numel())
            w = self.model_audio[max(0, end - window):end]
            out.append(torch.nn.functional.pad(w, (window - w.numel(), 0)))
        return torch.stack(out)

    def ws_at(self, times: Sequence[float]) -> torch.Tensor:
        """The W+ ``[B, L, C]`` shown at ``times`` (ascending, each after the last call's): the
        semantic layer plus the pulses of the audio up to each time (no synthesis)."""
        ws, _ = latents_at(times, self.steps, self.rhythm, self.rhythm_rate,
                           lambda a, b: self.rhythm_audio[a:b] * self.weight, lambda: self.rhythm_audio.size)
        return ws
