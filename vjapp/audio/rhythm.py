"""The rhythm layer's ears: causal band onsets, loudness envelopes, tempo and beat phase.

Everything here is numpy, runs on the engine thread (never in the audio callback) and sees only
audio that has already arrived: no look-ahead. Audio is consumed in blocks of any size; internally
it is cut into analysis frames of at most 1024 samples (about 23 ms at 44.1/48 kHz, the same
duration at other rates) with a hop of a quarter frame (at most 256 samples, ~5.8 ms).

Per hop (:class:`OnsetAnalyzer`):

* **Band onset strength**: spectral flux (half-wave rectified rise of the log-compressed
  magnitude spectrum) summed over three bands, low (kick, bass), mid (snare, voice), high
  (hats, cymbals). Each band is made scale-free by an adaptive baseline (slow mean of its flux)
  and an adaptive peak follower, so a strength of 1.0 means "as strong as this band's recent
  onsets", 0 means "nothing new". ``onset`` flags fire when a band's strength crosses a threshold,
  at most once per ``min_interval`` seconds.
* **Loudness**: RMS of the hop in dBFS, and two envelopes of it (fast: attack/release of a few
  tens of ms; slow: about a second), mapped to 0..1 between ``quiet_db`` and ``loud_db``.

Tempo and phase (:class:`TempoTracker`): the onset novelty (bands weighted toward the kick) is
kept for the last ``history_s`` seconds at the hop rate. A few times a second its autocorrelation
is scored against a comb of beat multiples for every candidate tempo in ``[min_bpm, max_bpm]``
(fractional lags, so the tempo is not quantised to the hop), with a broad prior around 120 BPM;
the beat phase is the offset at which a comb of past beats lands on the most novelty. The tracker
predicts the next beats from the last one it placed; it follows a tempo change within a few
seconds (the history slides). :class:`TapTempo` turns taps into a tempo and a phase.

Clocks: every source of tempo (the audio tracker, tap tempo, and external clocks such as MIDI clock
or Ableton Link) is a :class:`TempoSource`: given a time on the engine's clock it says where the
beat is (:class:`BeatState`). :class:`BeatClock` picks the one in charge.

Why our own code and not a library: aubio (GPL-3.0) and essentia (AGPL-3.0) would make the whole
app GPL/AGPL; librosa's beat tracker works on whole files (dynamic programming over the entire
onset envelope, not causal) and pulls numba. What is needed live is small: an STFT per hop, a
flux per band, an autocorrelation a few times a second. It is written here with numpy alone and
tested against synthetic loops of known tempo.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

__all__ = [
    "BANDS",
    "RhythmConfig",
    "HopFeatures",
    "OnsetAnalyzer",
    "TempoTracker",
    "TapTempo",
    "BeatState",
    "TempoSource",
    "BeatClock",
    "RhythmAnalyzer",
    "RhythmSnapshot",
    "analysis_sizes",
]

BANDS = ("low", "mid", "high")
HALF_PENALTY = 0.5  # weight of the autocorrelation at half a candidate's period (rejects half tempos)


def analysis_sizes(sample_rate: int) -> tuple[int, int]:
    """(frame, hop) in samples: ~23 ms frames (1024 at 44.1/48 kHz, at most 1024), hop a quarter."""
    target = 0.0232 * sample_rate
    frame = 1 << max(7, int(round(math.log2(max(target, 128.0)))))
    frame = min(frame, 1024)
    return frame, frame // 4


@dataclass(frozen=True)
class RhythmConfig:
    """Settings of the analysis (not the performer's: those are in ``Controls.rhythm``)."""

    band_edges_hz: tuple[float, float] = (150.0, 2500.0)  # low < 150 Hz <= mid < 2500 Hz <= high
    compression: float = 100.0  # log(1 + c |X|) before the flux: onsets of quiet and loud notes alike
    baseline_s: float = 1.0  # time constant of the flux baseline (steady texture is not an onset)
    peak_decay_s: float = 4.0  # how fast the peak follower forgets a loud onset
    peak_floor: float = 1.0  # flux (log-magnitude rise per bin) that is a full onset at the least: a
    # band with only faint spill (a hat's rumble in the low band) never reads as strong
    onset_threshold: float = 0.3  # strength that counts as an onset (meters flash, counters tick)
    min_interval_s: float = 0.06  # at most one onset per band in this time
    fast_attack_s: float = 0.005
    fast_release_s: float = 0.08
    slow_s: float = 1.0
    quiet_db: float = -55.0  # RMS dBFS that counts as silence (loudness 0)
    loud_db: float = -10.0  # RMS dBFS that counts as full scale (loudness 1)
    # tempo
    min_bpm: float = 60.0
    max_bpm: float = 200.0
    prior_bpm: float = 120.0  # centre of the log-normal tempo prior
    prior_octaves: float = 1.0  # its width (standard deviation in octaves)
    history_s: float = 6.0  # novelty kept for the autocorrelation
    min_history_s: float = 2.0  # no tempo before this much audio
    update_s: float = 0.25  # how often the tempo and phase are re-estimated
    band_weights: tuple[float, float, float] = (1.0, 0.5, 0.25)  # novelty for tempo: kick first
    hysteresis: float = 0.08  # a new tempo must score this much (relative) better to take over


@dataclass(frozen=True)
class HopFeatures:
    """The analysis of one hop (for tests and the scope)."""

    t: float  # stream time (s) of the hop's onset position
    strength: tuple[float, float, float]  # low, mid, high: 0..1
    onset: tuple[bool, bool, bool]
    rms_db: float


class OnsetAnalyzer:
    """Causal band onset strength and loudness envelopes of one mono stream.

    Feed it blocks with :meth:`process` (any length); it returns the features of every complete
    hop in them. ``state`` holds the newest values (band envelopes for the pulses are not kept
    here: see :class:`vjapp.engine.pulses.PulseEnvelopes`).
    """

    def __init__(self, sample_rate: int, config: RhythmConfig | None = None) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, got {sample_rate}")
        self.config = config or RhythmConfig()
        self.sample_rate = int(sample_rate)
        self.frame, self.hop = analysis_sizes(self.sample_rate)
        self.hop_s = self.hop / self.sample_rate
        self._window = np.hanning(self.frame + 2)[1:-1].astype(np.float32)
        freqs = np.fft.rfftfreq(self.frame, 1.0 / self.sample_rate)
        lo, hi = self.config.band_edges_hz
        self._bands = [(freqs >= 20.0) & (freqs < lo), (freqs >= lo) & (freqs < hi), freqs >= hi]
        self._band_bins = np.array([max(1, int(b.sum())) for b in self._bands], dtype=np.float64)
        self._buf = np.zeros(self.frame, dtype=np.float32)  # the newest `frame` samples
        self._fill = 0  # samples in the buffer since the last hop
        self._samples = 0  # total samples consumed
        self._prev_log: np.ndarray | None = None
        self._baseline = np.zeros(3)
        self._peak = np.full(3, self.config.peak_floor)
        self._since_onset = np.full(3, 1e9)
        self._a_base = math.exp(-self.hop_s / self.config.baseline_s)
        self._a_peak = math.exp(-self.hop_s / self.config.peak_decay_s)
        self._fast_db = -120.0
        self._slow_db = -120.0
        self.strength = np.zeros(3)
        self.onsets = np.zeros(3, dtype=np.int64)  # counts per band
        self.last_rms_db = -120.0
        # Where a hop's flux peaks relative to the onset: the Hann frame weighs its centre most, so
        # an onset is seen when it reaches about the middle of the frame.
        self.detection_delay_s = 0.5 * self.frame / self.sample_rate

    @property
    def stream_time(self) -> float:
        """Seconds of audio consumed so far."""
        return self._samples / self.sample_rate

    def loudness(self, which: str = "fast") -> float:
        """The fast or slow loudness envelope mapped to 0..1."""
        db = self._fast_db if which == "fast" else self._slow_db
        c = self.config
        return min(max((db - c.quiet_db) / (c.loud_db - c.quiet_db), 0.0), 1.0)

    def loudness_db(self, which: str = "fast") -> float:
        return self._fast_db if which == "fast" else self._slow_db

    def process(self, block: np.ndarray) -> list[HopFeatures]:
        """Consume mono float samples; return the features of each hop they completed."""
        x = np.asarray(block, dtype=np.float32).reshape(-1)
        out: list[HopFeatures] = []
        pos = 0
        while pos < x.size:
            take = min(self.hop - self._fill, x.size - pos)
            self._buf[:-take] = self._buf[take:]
            self._buf[-take:] = x[pos:pos + take]
            self._fill += take
            self._samples += take
            pos += take
            if self._fill == self.hop:
                self._fill = 0
                out.append(self._analyse_hop())
        return out

    def _analyse_hop(self) -> HopFeatures:
        c = self.config
        frame = self._buf
        hop = frame[-self.hop:]
        ms = float(np.dot(hop, hop)) / self.hop
        rms_db = 10.0 * math.log10(ms + 1e-12)
        self.last_rms_db = rms_db
        self._fast_db = _follow(self._fast_db, rms_db, self.hop_s, c.fast_attack_s, c.fast_release_s)
        a_slow = math.exp(-self.hop_s / c.slow_s)
        self._slow_db = a_slow * self._slow_db + (1.0 - a_slow) * max(rms_db, -120.0)

        spec = np.abs(np.fft.rfft(frame * self._window))
        logmag = np.log1p(c.compression * spec)
        if self._prev_log is None:
            flux = np.zeros(3)
        else:
            rise = np.maximum(logmag - self._prev_log, 0.0)
            flux = np.array([rise[b].sum() for b in self._bands]) / self._band_bins
        self._prev_log = logmag
        # scale-free strength: above 1.5x the slow baseline, relative to the recent peak
        excess = np.maximum(flux - 1.5 * self._baseline, 0.0)
        self._baseline = self._a_base * self._baseline + (1.0 - self._a_base) * flux
        self._peak = np.maximum(self._peak * self._a_peak, excess)
        self._peak = np.maximum(self._peak, c.peak_floor)
        strength = np.clip(excess / self._peak, 0.0, 1.0)
        # silence gate: nothing is an onset below the quiet level
        if rms_db < c.quiet_db:
            strength[:] = 0.0
        self.strength = strength
        self._since_onset += self.hop_s
        onset = (strength >= c.onset_threshold) & (self._since_onset >= c.min_interval_s)
        self._since_onset[onset] = 0.0
        self.onsets += onset
        t = self.stream_time - self.detection_delay_s
        return HopFeatures(t, tuple(float(s) for s in strength), tuple(bool(o) for o in onset), rms_db)


def _follow(env: float, target: float, dt: float, attack: float, release: float) -> float:
    tau = attack if target > env else release
    a = math.exp(-dt / tau) if tau > 0 else 0.0
    return a * env + (1.0 - a) * target


# ------------------------------------------------------------------------------------------
# Tempo and phase
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BeatState:
    """Where the beat is at one instant.

    ``beat`` counts beats from an arbitrary origin (fractional): ``beat % 1`` is the beat phase,
    ``(beat % beats_per_bar) / beats_per_bar`` the bar phase. ``confidence`` is 0..1.
    """

    bpm: float
    beat: float
    confidence: float
    source: str
    beats_per_bar: int = 4

    @property
    def period(self) -> float:
        return 60.0 / self.bpm

    @property
    def phase(self) -> float:
        return self.beat % 1.0

    @property
    def bar_phase(self) -> float:
        return (self.beat % self.beats_per_bar) / self.beats_per_bar

    def time_of_next(self, t: float, unit: str = "beat") -> float:
        """The engine-clock time of the next beat (or bar start) after time ``t`` (this state's)."""
        per = 1 if unit == "beat" else self.beats_per_bar
        beats_left = per - (self.beat % per)
        if beats_left < 1e-6:
            beats_left = per
        return t + beats_left * self.period


class TempoSource(Protocol):
    """Anything that knows the tempo: the audio tracker, tap tempo, MIDI clock, Ableton Link."""

    name: str

    def beat_at(self, t: float) -> BeatState | None:
        """Where the beat is at engine-clock time ``t``; None while this source does not know."""
        ...


class TempoTracker:
    """Tempo and beat phase from band onset strengths, causally (see the module docstring).

    Times are the stream's (seconds of audio since the analyzer started); :class:`RhythmAnalyzer`
    maps them to the engine's clock.
    """

    name = "audio"

    def __init__(self, hop_s: float, config: RhythmConfig | None = None) -> None:
        self.config = config or RhythmConfig()
        self.hop_s = float(hop_s)
        self.fr = 1.0 / self.hop_s  # novelty samples per second
        n = int(math.ceil(self.config.history_s * self.fr))
        self._hist = np.zeros(n)
        self._count = 0
        self._t_last = 0.0  # stream time of the newest novelty sample
        self._since_update = 0.0
        c = self.config
        self._bpms = np.arange(c.min_bpm, c.max_bpm + 1e-9, 0.05)
        z = np.log2(self._bpms / c.prior_bpm) / c.prior_octaves
        self._prior = np.exp(-0.5 * z * z)
        self.bpm: float | None = None
        self.confidence = 0.0
        self._beat_time: float | None = None  # stream time of a beat (the last one placed)
        self._beat_index = 0.0  # beat count at _beat_time

    def add(self, t: float, strength: Sequence[float]) -> None:
        """One hop's band strengths at stream time ``t``."""
        w = self.config.band_weights
        value = w[0] * strength[0] + w[1] * strength[1] + w[2] * strength[2]
        self._hist[:-1] = self._hist[1:]
        self._hist[-1] = value
        self._count += 1
        self._t_last = t
        self._since_update += self.hop_s
        if self._since_update >= self.config.update_s and self._count * self.hop_s >= self.config.min_history_s:
            self._since_update = 0.0
            self._estimate()

    # -- estimation --------------------------------------------------------------------------
    def _valid(self) -> np.ndarray:
        n = min(self._count, self._hist.size)
        return self._hist[-n:]

    def _estimate(self) -> None:
        x = self._valid()
        if float(x.max(initial=0.0)) <= 0.0:
            self.confidence = 0.0
            return
        x = x - x.mean()
        n = x.size
        spec = np.fft.rfft(x, 2 * n)
        acf = np.fft.irfft(spec * np.conj(spec))[:n]
        if acf[0] <= 0:
            return
        acf = acf / acf[0]  # biased: longer lags weigh less, which favours the faster of two octaves
        lags = 60.0 * self.fr / self._bpms  # [K] fractional lags in hops
        score = np.zeros_like(lags)
        for k in range(1, 5):
            score += _interp(acf, k * lags)
        # half-beat: a real beat has less at half its period than at the period (rejects x2 tempos)
        score -= HALF_PENALTY * np.maximum(_interp(acf, 0.5 * lags), 0.0)
        score *= self._prior
        best = int(np.argmax(score))
        best_bpm = float(self._bpms[best])
        if 0 < best < score.size - 1:  # parabolic refinement between grid points
            a, b, c = score[best - 1], score[best], score[best + 1]
            den = a - 2 * b + c
            if den < 0:
                best_bpm += 0.05 * 0.5 * (a - c) / den
        # confidence: how much the novelty repeats at the beat lags (noise ~0.1, a steady loop ~0.7+)
        comb = float(np.mean([_interp(acf, np.array([k * 60.0 * self.fr / best_bpm]))[0] for k in range(1, 5)]))
        self.confidence = float(np.clip((comb - 0.15) / 0.45, 0.0, 1.0))
        if self.confidence <= 0.0:
            return  # nothing periodic: keep what we had (or nothing)
        if self.bpm is not None and abs(best_bpm - self.bpm) > 1.5:
            # keep near the tempo we had unless the new one is clearly better (no octave flicker)
            cur = int(np.clip(round((self.bpm - self.config.min_bpm) / 0.05), 0, score.size - 1))
            window = slice(max(0, cur - 20), cur + 21)
            local = window.start + int(np.argmax(score[window]))
            if score[local] >= score[best] * (1.0 - self.config.hysteresis):
                best_bpm = float(self._bpms[local])
        self.bpm = best_bpm
        self._place_phase()

    def _place_phase(self) -> None:
        """Find the offset at which a comb of past beats lands on the most novelty."""
        assert self.bpm is not None
        x = self._valid()
        period = 60.0 * self.fr / self.bpm  # hops
        n_beats = max(1, min(8, int((x.size - 1) / period)))
        offsets = np.arange(0.0, period, 0.25)  # hops back from the newest sample
        weights = 0.85 ** np.arange(n_beats)
        idx = (x.size - 1) - offsets[:, None] - period * np.arange(n_beats)[None, :]  # [O, B]
        score = (_interp(x, idx) * weights).sum(1)
        back = float(offsets[int(np.argmax(score))]) * self.hop_s
        beat_time = self._t_last - back
        if self._beat_time is None:
            self._beat_index = 0.0
        else:  # keep counting beats from the old grid (so bars stay aligned)
            self._beat_index = self._beat_index + round((beat_time - self._beat_time) * self.bpm / 60.0)
        self._beat_time = beat_time

    # -- queries -----------------------------------------------------------------------------
    def beat_at_stream(self, t: float) -> BeatState | None:
        """Where the beat is at stream time ``t`` (predicted forward from the last placed beat)."""
        if self.bpm is None or self._beat_time is None:
            return None
        beat = self._beat_index + (t - self._beat_time) * self.bpm / 60.0
        return BeatState(self.bpm, beat, self.confidence, self.name)

    def predicted_beats(self, t_from: float, t_to: float) -> list[float]:
        """Stream times of the beats the tracker predicts in ``[t_from, t_to)``."""
        state = self.beat_at_stream(t_from)
        if state is None:
            return []
        out = []
        t = t_from + ((1.0 - state.phase) % 1.0) * state.period
        while t < t_to:
            out.append(t)
            t += state.period
        return out


def _interp(x: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``x`` at fractional indices ``pos`` (0 outside)."""
    pos = np.asarray(pos, dtype=np.float64)
    i0 = np.floor(pos).astype(np.int64)
    frac = pos - i0
    n = x.size
    ok0 = (i0 >= 0) & (i0 < n)
    ok1 = (i0 + 1 >= 0) & (i0 + 1 < n)
    a = np.where(ok0, x[np.clip(i0, 0, n - 1)], 0.0)
    b = np.where(ok1, x[np.clip(i0 + 1, 0, n - 1)], 0.0)
    return a * (1.0 - frac) + b * frac


class TapTempo:
    """Tempo and phase from taps (a button, a pad, an OSC message): the median of recent intervals.

    A pause longer than ``reset_s`` starts a new count. The last tap is a beat.
    """

    name = "tap"

    def __init__(self, reset_s: float = 2.0, keep: int = 8, min_bpm: float = 30.0, max_bpm: float = 300.0) -> None:
        self.reset_s = reset_s
        self.keep = keep
        self.min_bpm, self.max_bpm = min_bpm, max_bpm
        self._taps: list[float] = []
        self._lock = threading.Lock()

    def tap(self, t: float) -> None:
        with self._lock:
            if self._taps and (t - self._taps[-1] > self.reset_s or t <= self._taps[-1]):
                self._taps = []
            self._taps.append(t)
            self._taps = self._taps[-self.keep:]

    @property
    def bpm(self) -> float | None:
        with self._lock:
            taps = list(self._taps)
        if len(taps) < 2:
            return None
        interval = float(np.median(np.diff(taps)))
        return float(np.clip(60.0 / interval, self.min_bpm, self.max_bpm))

    def beat_at(self, t: float) -> BeatState | None:
        bpm = self.bpm
        if bpm is None:
            return None
        with self._lock:
            last, count = self._taps[-1], len(self._taps)
        return BeatState(bpm, (count - 1) + (t - last) * bpm / 60.0, min(1.0, (count - 1) / 4.0), self.name)


class BeatClock:
    """The tempo the show follows: the source named by the ``rhythm.tempo_source`` control.

    ``audio`` is the tracker on the sound; ``tap`` the tap tempo; ``external`` an external clock
    (MIDI clock, Ableton Link) once one is attached with :meth:`set_external`. A chosen source
    that does not know the tempo yet falls back to the audio tracker.
    """

    def __init__(self, audio: TempoSource, tap: TapTempo | None = None) -> None:
        self.audio = audio
        self.tap = tap or TapTempo()
        self.external: TempoSource | None = None
        self.choice = "audio"

    def set_external(self, source: TempoSource | None) -> None:
        self.external = source

    def beat_at(self, t: float) -> BeatState | None:
        order: list[TempoSource | None] = []
        if self.choice == "external":
            order.append(self.external)
        elif self.choice == "tap":
            order.append(self.tap)
        order.append(self.audio)
        for src in order:
            if src is None:
                continue
            state = src.beat_at(t)
            if state is not None:
                return state
        return None


# ------------------------------------------------------------------------------------------
# One analyzer of one source, on the engine's clock
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RhythmSnapshot:
    """What the scope shows: band strengths, onset counts, loudness, tempo and phase."""

    strength: tuple[float, float, float] = (0.0, 0.0, 0.0)
    onsets: tuple[int, int, int] = (0, 0, 0)
    loudness: float = 0.0
    loudness_db: float = -120.0
    bpm: float | None = None
    beat_phase: float = 0.0
    bar_phase: float = 0.0
    confidence: float = 0.0
    tempo_source: str = "audio"
    t: float = 0.0


@dataclass
class RhythmAnalyzer:
    """Onsets + tempo of one mono stream, with its stream time tied to the engine's clock.

    Call :meth:`feed` with new samples and the engine-clock time at which the newest of them
    arrived; :meth:`beat_at` answers in engine-clock time (a :class:`TempoSource`).
    """

    sample_rate: int
    config: RhythmConfig = field(default_factory=RhythmConfig)
    name: str = "audio"

    def __post_init__(self) -> None:
        self.onsets = OnsetAnalyzer(self.sample_rate, self.config)
        self.tempo = TempoTracker(self.onsets.hop_s, self.config)
        self._offset: float | None = None  # engine time - stream time

    def feed(self, mono: np.ndarray, now: float | None = None) -> list[HopFeatures]:
        hops = self.onsets.process(mono)
        for h in hops:
            self.tempo.add(h.t, h.strength)
        if now is not None:
            offset = now - self.onsets.stream_time
            # the arrival jitters with the audio blocks: follow the earliest arrival slowly
            if self._offset is None or offset < self._offset:
                self._offset = offset
            else:
                self._offset += 0.01 * (offset - self._offset)
        return hops

    def to_stream(self, t: float) -> float:
        return t - (self._offset or 0.0)

    def from_stream(self, t: float) -> float:
        """Engine-clock time of stream time ``t``."""
        return t + (self._offset or 0.0)

    def beat_at(self, t: float) -> BeatState | None:
        return self.tempo.beat_at_stream(self.to_stream(t))

    def snapshot(self, t: float, clock: BeatClock | None = None) -> RhythmSnapshot:
        state = (clock.beat_at(t) if clock is not None else self.beat_at(t))
        o = self.onsets
        return RhythmSnapshot(
            strength=tuple(float(s) for s in o.strength),  # type: ignore[arg-type]
            onsets=tuple(int(n) for n in o.onsets),  # type: ignore[arg-type]
            loudness=o.loudness("fast"), loudness_db=o.loudness_db("fast"),
            bpm=None if state is None else state.bpm,
            beat_phase=0.0 if state is None else state.phase,
            bar_phase=0.0 if state is None else state.bar_phase,
            confidence=0.0 if state is None else state.confidence,
            tempo_source=self.name if state is None else state.source,
            t=t,
        )
