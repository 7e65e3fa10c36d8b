"""Controls (validation, paths, dicts) and the newest-wins mailboxes that carry them."""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest

from vjapp.engine.controls import (
    CONTROL_SPECS,
    ControlError,
    Controls,
    FloatSpec,
    MixSlot,
    get_path,
    set_path,
)
from vjapp.engine.mailbox import LatestSlot, Mailbox

# ---------------------------------------------------------------------------------- controls


def test_defaults_are_valid_and_in_the_table() -> None:
    c = Controls()
    assert c.size == "native" and c.noise_mode == "const" and c.paused is False
    assert c.source_weights == (1.0, 0.0)
    for path, spec in CONTROL_SPECS.items():
        value = get_path(c, path)
        if isinstance(spec, FloatSpec):
            assert spec.lo <= value <= spec.hi, path
    assert "mix.fine.strength" in CONTROL_SPECS and "group_gains.mid" in CONTROL_SPECS
    assert "source_weights.1" in CONTROL_SPECS


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("gain", 10.0, 4.0),
        ("gain", -1, 0.0),
        ("smoothing", 1.0, 0.99),
        ("truncation_psi", 2, 1.5),
        ("seed", -5, 0),
        ("seed", 2**40, 2**31 - 1),
        ("seed", 41.6, 42),  # floats round for int fields
        ("seed", np.int64(7), 7),
        ("model_rate", 0.1, 1.0),
        ("fps", 1000, 240.0),
        ("fps", np.float32(59.94), pytest.approx(59.94, rel=1e-6)),
        ("mix.coarse.strength", 3, 1.0),
        ("group_gains.fine", 9, 4.0),
        ("source_weights.1", 0.25, 0.25),
        ("source_weights.0", 7, 1.0),
        ("size", 256, 256),
        ("size", 300, 256),  # snaps to the nearest power of two
        ("size", 5000, 1024),
        ("size", 3, 64),
        ("size", " Native ", "native"),
        ("noise_mode", "RANDOM", "random"),
        ("mix.mid.source_kind", "prompt", "prompt"),
        ("paused", True, True),
        ("paused", np.bool_(True), True),
        ("prompt", "  a stormy sea \n", "a stormy sea"),
        ("prompt", "x" * 1000, "x" * 200),
    ],
)
def test_set_path_clamps_and_coerces(path: str, value: object, expected: object) -> None:
    c = set_path(Controls(), path, value)
    assert get_path(c, path) == expected
    assert type(get_path(c, path)) is type(get_path(Controls(), path)) or path == "size"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("gain", float("nan"), "finite"),
        ("gain", float("inf"), "finite"),
        ("seed", float("-inf"), "finite"),
        ("gain", "1.0", "expected a number"),
        ("gain", True, "expected a number"),  # bools are not numbers here
        ("seed", None, "expected a number"),
        ("paused", 1, "expected a bool"),
        ("paused", "true", "expected a bool"),
        ("prompt", 5, "expected a string"),
        ("noise_mode", "loud", "not one of"),
        ("mix.fine.source_kind", "video", "not one of"),
        ("size", "big", "power of two"),
        ("source_weights", [1.0], "expected 2 numbers"),
        ("source_weights", [1.0, float("nan")], "source_weights.1"),
        ("nope", 1, "unknown control"),
        ("mix.coarse", 1, "unknown control"),
        ("mix.coarse.strength.x", 1, "unknown control"),
        ("source_weights.2", 1.0, "unknown control"),
    ],
)
def test_set_path_rejects_with_a_named_error(path: str, value: object, message: str) -> None:
    before = Controls(gain=2.0)
    with pytest.raises(ControlError, match=message):
        set_path(before, path, value)
    assert before.gain == 2.0  # immutable: the old value stays


def test_construction_and_replace_validate() -> None:
    c = Controls(gain=9, seed=3.2, source_weights=[0.5, 2])  # type: ignore[arg-type]
    assert (c.gain, c.seed, c.source_weights) == (4.0, 3, (0.5, 1.0))
    with pytest.raises(ControlError, match="finite"):
        Controls(gain=math.nan)
    with pytest.raises(ControlError, match="finite"):
        c.replace(smoothing=math.inf)
    with pytest.raises(ControlError, match="unknown control field"):
        c.replace(volume=1.0)
    with pytest.raises(ControlError, match="MixGroups"):
        c.replace(mix=MixSlot())
    d = c.replace(gain=0.5, paused=True)
    assert (d.gain, d.paused, c.gain, c.paused) == (0.5, True, 4.0, False)
    with pytest.raises(Exception):  # frozen
        c.gain = 1.0  # type: ignore[misc]


def test_dict_round_trip_is_strict_and_json_ready() -> None:
    c = Controls()
    c = set_path(c, "mix.fine.source_kind", "seed")
    c = set_path(c, "mix.fine.seed", 1234)
    c = set_path(c, "prompt", "waterfall at night")
    c = set_path(c, "size", 512)
    data = json.loads(json.dumps(c.to_dict()))
    assert Controls.from_dict(data) == c
    assert data["mix"]["fine"] == {"source_kind": "seed", "seed": 1234, "prompt": "", "strength": 1.0}
    assert Controls.from_dict({"gain": 2.5}) == Controls(gain=2.5)  # missing keys -> defaults
    with pytest.raises(ControlError, match="'mix.fine.colour'"):
        Controls.from_dict({"mix": {"fine": {"colour": 1}}})
    with pytest.raises(ControlError, match="'volume'"):
        Controls.from_dict({"volume": 1})
    with pytest.raises(ControlError, match="group_gains.mid: value must be finite"):
        Controls.from_dict({"group_gains": {"mid": float("nan")}})
    with pytest.raises(ControlError, match="mix: expected a mapping"):
        Controls.from_dict({"mix": 3})


# ---------------------------------------------------------------------------------- mailbox


def test_concurrent_updates_of_different_fields_are_never_lost() -> None:
    box: Mailbox[Controls] = Mailbox(Controls())
    n = 2000
    start = threading.Barrier(2)

    def writer(path: str) -> None:
        start.wait()
        for i in range(1, n + 1):
            box.update(lambda c, i=i: set_path(c, path, i))

    threads = [threading.Thread(target=writer, args=(p,)) for p in ("seed", "mix.coarse.seed")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    version, c = box.get()
    assert (c.seed, c.mix.coarse.seed) == (n, n)  # both writers' last edits are there
    assert version == 2 * n


def test_update_that_raises_changes_nothing() -> None:
    box = Mailbox(Controls(gain=2.0))
    with pytest.raises(ControlError):
        box.update(lambda c: set_path(c, "gain", float("nan")))
    assert box.get() == (0, Controls(gain=2.0))


def test_wait_newer_wakes_and_times_out() -> None:
    box = Mailbox(0)
    assert box.wait_newer(0, timeout=0.01) is False
    assert box.get_if_newer(0) is None
    woke = threading.Event()

    def waiter() -> None:
        if box.wait_newer(0, timeout=10):
            woke.set()

    t = threading.Thread(target=waiter)
    t.start()
    assert box.put(5) == 1
    t.join(timeout=10)
    assert woke.is_set()
    assert box.get_if_newer(0) == (1, 5)
    assert box.wait_newer(0, timeout=0) is True  # already newer: no wait


def test_latest_slot_keeps_newest_and_counts_drops() -> None:
    slot: LatestSlot[str] = LatestSlot()
    assert slot.take_newer(0) is None and slot.age_s() == math.inf
    assert slot.publish("a") == 1
    assert slot.publish("b") == 2  # "a" never taken: dropped
    assert slot.take_newer(0) == (2, "b")
    assert slot.take_newer(2) is None  # nothing newer than what we have
    slot.publish("c")  # "b" was taken: not a drop
    assert slot.dropped == 1
    assert slot.take_newer(2) == (3, "c")


def test_latest_slot_wait_newer_across_threads() -> None:
    slot: LatestSlot[int] = LatestSlot()
    got: list[tuple[int, int] | None] = []

    def consumer() -> None:
        got.append(slot.wait_newer(0, timeout=10))

    t = threading.Thread(target=consumer)
    t.start()
    slot.publish(42)
    t.join(timeout=10)
    assert got == [(1, 42)]
    assert slot.wait_newer(1, timeout=0.01) is None


def test_producer_never_blocks_on_a_slow_consumer() -> None:
    slot: LatestSlot[int] = LatestSlot()
    seen: list[int] = []
    stop = threading.Event()

    def consumer() -> None:
        stamp = 0
        while not stop.is_set():
            item = slot.wait_newer(stamp, timeout=0.05)
            if item is not None:
                stamp, value = item
                seen.append(value)
                stop.wait(0.002)  # slow consumer

    t = threading.Thread(target=consumer)
    t.start()
    for i in range(20000):
        slot.publish(i)
    stop.set()
    t.join(timeout=10)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)  # newest-first, no repeats
    # every item was either seen or counted as dropped (the very last may still sit in the slot)
    assert slot.dropped + len(seen) in (19999, 20000)
