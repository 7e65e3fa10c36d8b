"""Beat-quantised changes: a new seed, prompt, style mix or preset lands on the next beat or bar.

With ``rhythm.quantize`` set to ``beat`` or ``bar``, the engine applies everything else of a new
:class:`~vjapp.engine.controls.Controls` at once (gains, pulses, smoothing are instant), but holds
the picture-changing part (seed, prompt, mix, truncation, camera) until the next beat or bar of the
:class:`~vjapp.audio.rhythm.BeatClock`. Without a tempo, or with ``off``, changes apply at once.
A newer change while one is pending replaces it (newest wins) and keeps the same due time.
"""

from __future__ import annotations

from dataclasses import dataclass

from vjapp.audio.rhythm import BeatState
from vjapp.engine.controls import Controls

__all__ = ["QUANTISED_FIELDS", "ChangeQuantizer", "PendingChange"]

QUANTISED_FIELDS = ("seed", "prompt", "mix", "truncation_psi", "camera")


def _picture(c: Controls) -> tuple:
    return tuple(getattr(c, f) for f in QUANTISED_FIELDS)


@dataclass(frozen=True)
class PendingChange:
    controls: Controls  # the whole new controls, applied when due
    due: float  # engine-clock time of the beat or bar it lands on


class ChangeQuantizer:
    """Holds picture changes until the next beat/bar (see the module docstring)."""

    def __init__(self) -> None:
        self.pending: PendingChange | None = None

    def submit(self, shown: Controls, new: Controls, now: float, beat: BeatState | None) -> Controls:
        """The controls to apply now, given those ``shown`` and a ``new`` value from the mailbox.

        The picture part of ``new`` is held back (and returned later by :meth:`due`) when
        quantising is on and a tempo is known.
        """
        mode = new.rhythm.quantize
        if mode == "off" or beat is None or _picture(new) == _picture(shown):
            if mode == "off" or beat is None:
                self.pending = None
            elif self.pending is not None:  # a non-picture change while one is pending: keep it pending
                self.pending = PendingChange(_with_picture(new, self.pending.controls), self.pending.due)
            return new
        due = self.pending.due if self.pending is not None else beat.time_of_next(now, mode)
        self.pending = PendingChange(new, due)
        return _with_picture(new, shown)

    def due(self, now: float, lead: float = 0.0) -> Controls | None:
        """The pending controls once ``now + lead`` reaches their beat (then forgotten), else None.

        ``lead`` lets the engine apply a change early by the display's delay, so the picture
        changes on the beat as shown, not one model period after it.
        """
        if self.pending is not None and now + lead >= self.pending.due:
            controls, self.pending = self.pending.controls, None
            return controls
        return None


def _with_picture(controls: Controls, source: Controls) -> Controls:
    """``controls`` with the picture fields of ``source``."""
    return controls.replace(**{f: getattr(source, f) for f in QUANTISED_FIELDS})
