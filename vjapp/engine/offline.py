"""The show on a sample clock: model steps and the rhythm layer driven by a decoded signal.

``vjapp render`` and the beat benchmark use it. Time is counted in samples, not wall time: model
step ``k`` at ``k / model_rate`` seconds reads the audio window that ends there, and frame ``i``
at ``i / fps`` shows the latent at that instant plus the pulses of the rhythm layer fed with the
audio up to that instant (causal, as live). Offline we may look ahead one model step, so every
frame lies between two real keyframes of the semantic layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from vjapp.audio.rhythm import RhythmAnalyzer
from vjapp.engine.pipeline import Heard
from vjapp.engine.show import Show

__all__ = ["OfflineShow", "RhythmFollower"]

HEAR_BATCH = 64  # model steps whose audio windows go through the mel + E_a in one batch


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
        level = onsets.loudness("fast") ** (2.0 * max(self.show.controls.loudness_reactivity, 0.0))
        beats = [self.analyzer.tempo.beat_at_stream(h.t) for h in hops]
        self.show.listen([h.strength for h in hops], onsets.hop_s, level, beats)

    def pulse(self) -> torch.Tensor | None:
        p = self.show.pulse()
        return None if p is None else p.clone()


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
    _heard: dict[int, Heard] = field(default_factory=dict)
    _next_step: int = 0

    def __post_init__(self) -> None:
        self.rhythm = RhythmFollower(self.show, int(self.rhythm_rate))
        self.step_dt = 1.0 / float(self.model_rate)

    def _window_at(self, k: int) -> torch.Tensor:
        sr = self.show.sound.sample_rate
        window = self.show.sound.window_samples
        end = min(int(round(k * self.step_dt * sr)), self.model_audio.numel())
        w = self.model_audio[max(0, end - window):end]
        return torch.nn.functional.pad(w, (window - w.numel(), 0))

    def model_step_until(self, t: float) -> None:
        """Every model step at or before ``t`` (E_a batched over upcoming steps)."""
        while self._next_step * self.step_dt <= t:
            k = self._next_step
            if k not in self._heard:
                ks = range(k, k + HEAR_BATCH)
                self._heard.clear()
                windows = torch.stack([self._window_at(j) for j in ks])
                self._heard.update(zip(ks, self.show.sound.hear_many(windows, self.weight)))
            self.show.model_step(k * self.step_dt, [], heard=self._heard[k])
            self._next_step += 1

    def listen_until(self, t: float) -> None:
        """Feed the rhythm layer with the audio up to time ``t``."""
        end = min(int(round(t * self.rhythm_rate)), self.rhythm_audio.size)
        if end > self.rhythm.position:
            self.rhythm.hear(self.rhythm_audio[self.rhythm.position:end] * self.weight)

    def _pulses(self, times: Sequence[float]) -> list[torch.Tensor | None]:
        self.model_step_until(times[-1] + self.step_dt)  # one step ahead: between real keyframes
        pulses = []
        for t in times:
            self.listen_until(t)
            pulses.append(self.rhythm.pulse())
        return pulses

    def ws_at(self, times: Sequence[float]) -> torch.Tensor:
        """The W+ ``[B, L, C]`` shown at ``times``: semantic layer plus pulses (no synthesis)."""
        pulses = self._pulses(times)
        ws = torch.stack([self.show.timeline.sample(t) for t in times])
        for i, p in enumerate(pulses):
            if p is not None:
                ws[i] += p
        return ws

    def frames_at(self, times: Sequence[float]) -> list[np.ndarray]:
        """Frames for ``times`` (ascending, each after the last call's), rhythm layer included."""
        return self.show.frames_at(times, self._pulses(times))
