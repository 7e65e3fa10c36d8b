"""Messages a person reads: quoted input cut short, repeats of one kind rate-limited."""

from __future__ import annotations

import logging

import pytest

from vjapp.messages import RepeatLimiter, message_key, quote, shorten
from vjapp.presets import PresetError, PresetLibrary
from vjapp.ui.bridge import EngineBridge


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_quote_and_shorten_cut_long_input_and_say_how_long_it_was() -> None:
    name = "A" * 65_000
    q = quote(name)
    assert q == repr("A" * 80) + "… (65000 chars)" and len(q) < 100
    assert quote("storm") == "'storm'" and quote(3) == "3"
    assert shorten("x" * 10, 20) == "x" * 10
    assert shorten("x" * 1000, 20) == "x" * 20 + "… (1000 chars)"
    # different garbage names are one kind of message; other messages are not
    assert message_key("error", f"no preset named {quote('a' * 500)}") == message_key("error", f"no preset named {quote('b')}")
    assert message_key("error", "cannot play a.wav") != message_key("error", "cannot play b.wav")


def test_preset_errors_quote_a_huge_name_short() -> None:
    with pytest.raises(PresetError) as err:
        PresetLibrary().get("z" * 65_000)
    assert len(str(err.value)) < 400 and "(65000 chars)" in str(err.value)


def test_limiter_lets_one_through_per_interval_and_summarises_the_rest() -> None:
    clock = FakeClock()
    limiter = RepeatLimiter(interval_s=2.0, clock=clock)
    assert limiter.admit("k", "error", "first")
    assert [limiter.admit("k", "error", f"m{i}") for i in range(99)] == [False] * 99
    assert limiter.admit("other", "error", "another kind")  # other kinds are not held back
    assert limiter.due() == []  # not yet: the interval has not passed
    clock.t += 2.0
    (summary,) = limiter.due()
    assert (summary.count, summary.text) == (99, "m98") and summary.line().startswith("99 more messages like this")
    assert limiter.due() == []  # once
    clock.t += 2.0
    assert limiter.admit("k", "error", "later")  # a quiet interval later, the next one shows at once


def test_bridge_cuts_and_rate_limits_what_reaches_the_panel_and_the_log(qtbot, caplog) -> None:
    caplog.set_level(logging.INFO)
    bridge = EngineBridge(repeat_interval_s=0.2)
    got: list[tuple[str, str]] = []
    bridge.message.connect(lambda level, text: got.append((level, text)))
    logger = logging.getLogger("vjapp.test_messages")
    for i in range(50):
        bridge.report(f"no preset named {quote(str(i) * 30_000)}", "error", logger=logger)
    bridge.report("something else", "warning", logger=logger)
    bridge.poll()
    qtbot.wait(250)
    bridge.poll()
    texts = [t for _, t in got]
    assert len(texts) == 3 and texts[1] == "something else"
    assert texts[2].startswith("49 more messages like this") and max(map(len, texts)) < 300
    assert [r.getMessage() for r in caplog.records if r.name == "vjapp.test_messages"] == texts
    assert [r.levelname for r in caplog.records if r.name == "vjapp.test_messages"] == ["ERROR", "WARNING", "ERROR"]
