"""Messages a person reads: quoted input cut to a readable length, repeats rate-limited.

Errors often quote what came in (an OSC address, a preset name): a 60 KB garbage name must not
become a 60 KB log line, and a hundred of them must not become a hundred lines. :func:`quote`
shortens one quoted value, :func:`shorten` any text; :class:`RepeatLimiter` lets one message of a
kind through per interval and counts the rest, so the reader gets the first one at once and then
"N more like this". Pure Python (no Qt): the OSC thread, the presets and the GUI bridge share it.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["QUOTE_CHARS", "MESSAGE_CHARS", "RepeatLimiter", "Summary", "message_key", "quote", "shorten"]

QUOTE_CHARS = 80  # quoted input longer than this is cut
MESSAGE_CHARS = 600  # the most of one message that reaches the log panel or the log
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_CUT = re.compile(r"… \(\d+ chars\)")


def shorten(text: str, limit: int = MESSAGE_CHARS) -> str:
    """``text`` if it has at most ``limit`` characters, else its start, ``…`` and its length."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} chars)"


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)`` for a message, cut after ``limit`` characters of the value.

    A long string keeps its quotes (``'abcd…'… (65000 chars)``), so :func:`message_key` still
    sees one quoted value.
    """
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}… ({len(value)} chars)"
    return shorten(repr(value), limit)


def message_key(level: str, text: str) -> str:
    """What makes two messages "the same kind": the text with quoted values and the lengths of
    cut ones blanked (so 100 different bad preset names are one kind), at most 200 characters."""
    blanked = _CUT.sub("", _QUOTED.sub(lambda m: m.group(0)[0] * 2, text))
    return f"{level}:{blanked[:200]}"


@dataclass(frozen=True)
class Summary:
    """Messages of one kind held back since the last one shown: ``count``, the newest ``text``."""

    key: str
    level: str
    text: str
    count: int
    owner: Any  # what the caller attached to the key (e.g. the logger to write the summary to)

    def line(self) -> str:
        more = "1 more message" if self.count == 1 else f"{self.count} more messages"
        return f"{more} like this in the last seconds, the newest: {self.text}"


class _Kind:
    __slots__ = ("shown_at", "held", "text", "level", "owner")

    def __init__(self, shown_at: float) -> None:
        self.shown_at = shown_at
        self.held = 0
        self.text = ""
        self.level = ""
        self.owner: Any = None


class RepeatLimiter:
    """At most one message per key every ``interval_s``; the ones held back are counted.

    :meth:`admit` says whether to show a message now. Held-back messages come back once per key
    from :meth:`due` when the key's interval has passed, as a :class:`Summary` to show in their
    place. Thread-safe; at most ``max_keys`` keys are remembered (the oldest are forgotten).
    """

    def __init__(self, interval_s: float = 2.0, max_keys: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = float(interval_s)
        self.max_keys = int(max_keys)
        self._clock = clock
        self._lock = threading.Lock()
        self._kinds: dict[str, _Kind] = {}
        self.held_total = 0

    def admit(self, key: str, level: str = "", text: str = "", owner: Any = None) -> bool:
        """True: show this message now. False: it is counted and summarised later by :meth:`due`."""
        now = self._clock()
        with self._lock:
            kind = self._kinds.get(key)
            if kind is None or (kind.held == 0 and now - kind.shown_at >= self.interval_s):
                self._remember(key, _Kind(now))
                return True
            kind.held += 1
            kind.text, kind.level, kind.owner = text, level, owner
            self.held_total += 1
            return False

    def due(self) -> list[Summary]:
        """Summaries of the keys whose interval has passed with messages held back (each once;
        the key's next interval starts now, so a steady storm gives one summary per interval)."""
        now = self._clock()
        out: list[Summary] = []
        with self._lock:
            for key, kind in self._kinds.items():
                if kind.held and now - kind.shown_at >= self.interval_s:
                    out.append(Summary(key, kind.level, kind.text, kind.held, kind.owner))
                    kind.held, kind.shown_at, kind.owner = 0, now, None
        return out

    def _remember(self, key: str, kind: _Kind) -> None:
        self._kinds.pop(key, None)
        self._kinds[key] = kind
        while len(self._kinds) > self.max_keys:
            del self._kinds[next(iter(self._kinds))]  # the least recently shown kind
