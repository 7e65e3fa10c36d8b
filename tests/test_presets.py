"""Presets: the shipped ones, validation, user save/load/delete, lookup, stepping."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import pytest

from vjapp.engine.controls import CONTROL_SPECS, Controls, VectorSpec, get_path
from vjapp.engine.mailbox import Mailbox
from vjapp.presets import (
    SHIPPED_DIR,
    Preset,
    PresetError,
    PresetLibrary,
    PresetPlayer,
    default_user_dir,
)

LANDSCAPE = ("thunderstorm", "waterfall", "volcano", "squishing water", "wind", "fire crackling",
             "raining", "underwater bubbling", "splashing water")
LEAVES = [p for p, s in CONTROL_SPECS.items() if not isinstance(s, VectorSpec)]


def diff(a: Controls, b: Controls) -> set[str]:
    return {p for p in LEAVES if get_path(a, p) != get_path(b, p)}


@pytest.fixture
def lib(tmp_path: Path) -> PresetLibrary:
    return PresetLibrary(user_dir=tmp_path / "user")


def write(path: Path, doc: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(doc, bytes):
        path.write_bytes(doc)
    else:
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_shipped_presets_load_and_differ(lib):
    assert lib.errors == []
    names = lib.names()
    assert len(names) >= 5
    assert {"calm-drift", "storm", "glitch-fine", "prompt-volcano", "two-sources"} <= set(names)
    base = Controls()
    looks = {n: lib.apply(n, base) for n in names}
    for n in names:
        p = lib.get(n)
        assert p.description and p.path is not None and p.path.parent == SHIPPED_DIR and not p.user
    for a, b in itertools.combinations(names, 2):
        assert len(diff(looks[a], looks[b])) >= 2, (a, b)
    full_looks = [n for n in names if n not in ("two-sources", "neutral")]
    for a, b in itertools.combinations(full_looks, 2):
        assert len(diff(looks[a], looks[b])) >= 4, (a, b)
    calm, storm, glitch = looks["calm-drift"], looks["storm"], looks["glitch-fine"]
    assert calm.smoothing >= 0.8 and calm.gain < 1.0 and calm.truncation_psi == 0.6
    assert storm.gain > 2 and storm.loudness_reactivity == 2.0 and storm.smoothing < 0.3
    assert storm.group_gains.coarse > storm.group_gains.fine
    assert glitch.group_gains.fine == 3.0 and glitch.noise_mode == "random" and glitch.smoothing < 0.1
    volcano = looks["prompt-volcano"]
    assert volcano.prompt == "a volcano erupting at night" and volcano.mix.fine.source_kind == "seed"
    assert looks["two-sources"].source_weights == (0.5, 0.5)
    assert looks["neutral"] == base
    # at least three looks play with the rhythm layer, each in its own way
    rhythmic = [n for n in names if lib.get(n).controls.get("rhythm")]
    assert len(rhythmic) >= 3 and len({looks[n].rhythm for n in rhythmic}) == len(rhythmic)
    techno = looks["techno-pulse"]
    assert techno.rhythm.quantize == "beat" and techno.rhythm.low.group == "coarse" and techno.rhythm.amount >= 2
    for n in full_looks:  # prompts speak the embedded model's language
        assert any(label in looks[n].prompt for label in LANDSCAPE), n


def test_a_preset_sets_only_the_fields_it_names(lib):
    start = Controls(gain=3.0, seed=99, prompt="raining", fps=60.0)
    two = lib.apply("two-sources", start)
    assert two == start.replace(source_weights=(0.5, 0.5))
    storm = lib.apply("storm", start)
    assert storm.seed == 99 and storm.fps == 60.0 and storm.gain == 2.5
    partial = Preset("fine-kick", controls={"group_gains": {"fine": 3.5}})
    assert partial.apply(start) == start.replace(group_gains=start.group_gains.replace(fine=3.5))
    assert partial.values == {"group_gains.fine": 3.5}


BAD = {
    "unknown-field": ({"controls": {"gian": 1.0}}, "gian"),
    "unknown-nested": ({"controls": {"mix": {"fine": {"colour": 1}}}}, "mix.fine.colour"),
    "wrong-type": ({"controls": {"gain": "loud"}}, "gain"),
    "bool-for-number": ({"controls": {"smoothing": True}}, "smoothing"),
    "nan": ('{"controls": {"gain": NaN}}', "gain"),
    "infinity": ('{"controls": {"group_gains": {"fine": Infinity}}}', "group_gains.fine"),
    "bad-choice": ({"controls": {"noise_mode": "loud"}}, "noise_mode"),
    "group-not-object": ({"controls": {"mix": 3}}, "mix"),
    "vector-length": ({"controls": {"source_weights": [0.5]}}, "source_weights"),
    "top-key": ({"control": {"gain": 1.0}}, "control"),
    "no-controls": ({"description": "x"}, "controls"),
    "newer": ({"version": 99, "controls": {}}, "version"),
    "format": ({"format": "other", "controls": {}}, "format"),
    "not-json": ('{"controls": {"gain": 1.0,}', "line 1"),
    "not-object": ("[1, 2]", "JSON object"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_preset_files_raise_one_clear_error(tmp_path, name):
    doc, field = BAD[name]
    path = write(tmp_path / f"{name}.json", doc)
    with pytest.raises(PresetError) as info:
        Preset.load(path)
    assert str(path) in str(info.value) and field in str(info.value)


def test_bad_preset_never_changes_state_and_others_still_load(tmp_path, caplog):
    user = tmp_path / "user"
    write(user / "broken.json", "{ this is not json")
    write(user / "wrong-type.json", {"controls": {"gain": 2.0, "prompt": 5}})
    write(user / "good.json", {"description": "fine", "controls": {"gain": 3.0}})
    write(user / "not utf8.json", b'{"controls": {"prompt": "\xff\xfe"}}')
    with caplog.at_level(logging.WARNING, logger="vjapp.presets"):
        lib = PresetLibrary(user_dir=user)
    failed = {p.name: msg for p, msg in lib.errors}
    assert set(failed) == {"broken.json", "wrong-type.json", "not utf8.json"}
    assert "invalid JSON" in failed["broken.json"] and "'prompt'" in failed["wrong-type.json"]
    assert "not UTF-8" in failed["not utf8.json"]
    assert "good" in lib.names() and "storm" in lib.names()  # one bad file hides nothing
    assert "broken" not in lib.names()

    mb: Mailbox[Controls] = Mailbox(Controls(gain=1.5))
    player = PresetPlayer(lib, mb)
    v = mb.version
    for name in ("broken", "wrong-type", 42, True, 1.5):
        with pytest.raises(PresetError):
            player.load(name)
    assert mb.version == v and mb.get()[1] == Controls(gain=1.5)
    with pytest.raises(PresetError, match="prompt"):
        Preset("direct", controls={"prompt": 5})
    player.load("good")
    assert mb.get()[1].gain == 3.0


def test_out_of_range_values_are_clamped_like_controls(tmp_path, caplog):
    path = write(tmp_path / "hot.json", {"controls": {"gain": 9, "group_smoothing": {"fine": -1}}})
    with caplog.at_level(logging.WARNING, logger="vjapp.presets"):
        p = Preset.load(path)
    assert p.values == {"gain": 4.0, "group_smoothing.fine": 0.0}
    assert "clamped" in caplog.text


def test_save_load_round_trip_override_and_delete(tmp_path):
    user = tmp_path / "cfg" / "presets"
    lib = PresetLibrary(user_dir=user)
    shipped = lib.names()
    state = Controls(seed=31337, prompt="splashing water", truncation_psi=1.2, gain=0.25,
                     size=512, noise_mode="none", source_weights=(0.2, 0.9), paused=True)
    state = state.replace(mix=state.mix.replace(mid=state.mix.mid.replace(source_kind="prompt",
                                                                         prompt="wind", strength=0.3)))
    path = lib.save("my look", state, description="for the encore")
    assert path == user / "my look.json" and path.is_file()
    assert sorted(p.name for p in user.iterdir()) == ["my look.json"]  # no temp file left over
    assert lib.names() == shipped + ["my look"]

    again = PresetLibrary(user_dir=user)
    p = again.get("my look")
    assert p.user and p.description == "for the encore"
    assert p.apply(Controls()) == state
    assert again.apply("my look", lib.apply("storm", Controls())) == state  # saves the full state
    assert json.loads(path.read_text())["controls"] == state.to_dict()

    lib.save("storm", Controls(gain=0.1))  # a user preset overrides a shipped name in place
    assert lib.names() == shipped + ["my look"]
    assert lib.get("storm").user and lib.apply("storm", Controls(gain=3.0)).gain == 0.1
    lib.delete("storm")
    assert not lib.get("storm").user and lib.apply("storm", Controls()).gain == 2.5
    with pytest.raises(PresetError, match="shipped"):
        lib.delete("storm")
    with pytest.raises(PresetError, match="no preset"):
        lib.delete("nothing")
    for bad in ("", ".hidden", "../escape", "a/b", "x" * 65, "trailing.", 5):
        with pytest.raises(PresetError, match="invalid preset name"):
            lib.save(bad, state)  # type: ignore[arg-type]
    assert sorted(p.name for p in user.iterdir()) == ["my look.json"]


def test_lookup_by_name_and_index(lib):
    names = lib.names()
    assert lib.get(0) is lib.get(names[0])
    assert lib.get(len(names) - 1).name == names[-1]
    assert lib.get("STORM").name == "storm"  # case-insensitive fallback
    assert lib.index("glitch-fine") == names.index("glitch-fine")
    for bad in (len(names), -1, "nope", None, True):
        with pytest.raises(PresetError):
            lib.get(bad)  # type: ignore[arg-type]


def test_player_steps_and_wraps(lib):
    mb: Mailbox[Controls] = Mailbox(Controls())
    seen: list[tuple[str, Controls, Controls]] = []
    player = PresetPlayer(lib, mb, on_applied=lambda p, old, new: seen.append((p.name, old, new)))
    names = lib.names()
    assert player.next().name == names[0]
    assert player.prev().name == names[-1]
    assert player.next().name == names[0]
    player.load(names[-2])
    assert player.next().name == names[-1] and player.next().name == names[0]
    assert [s[0] for s in seen] == [names[0], names[-1], names[0], names[-2], names[-1], names[0]]
    for (_, old, new), (_, nxt_old, _) in zip(seen, seen[1:]):
        assert new == nxt_old  # old/new are the actual mailbox transitions
    assert mb.get()[1] == seen[-1][2]
    actions = player.osc_actions()
    assert set(actions) == {"preset", "preset/next", "preset/prev"}
    actions["preset"]("storm")
    assert player.current == "storm" and mb.get()[1].gain == 2.5


def test_default_user_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_user_dir() == tmp_path / "xdg" / "vjapp" / "presets"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_user_dir() == tmp_path / "home" / ".config" / "vjapp" / "presets"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert default_user_dir() == tmp_path / "home" / ".config" / "vjapp" / "presets"
    lib = PresetLibrary()  # default dirs: nothing is created until a save
    assert not (tmp_path / "home" / ".config").exists() and "storm" in lib.names()
