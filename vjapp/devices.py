"""``vjapp devices``: the audio devices PortAudio sees (inputs for live capture, outputs for playback),
and with ``--midi`` the MIDI inputs (for ``vjapp --midi``)."""

from __future__ import annotations

import argparse
import sys

from vjapp.audio import list_input_devices, list_output_devices


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--outputs", action="store_true", help="also list output devices")
    p.add_argument("--midi", action="store_true", help="list MIDI input ports instead (needs the midi extra)")
    p.add_argument("--midi-api", default="auto", choices=("auto", "alsa", "jack", "coremidi", "winmm"),
                   help="MIDI system to list (auto: as vjapp --midi chooses)")


def list_midi(api: str) -> int:
    from vjapp.control.midi import MidiError, list_midi_inputs

    try:
        names = list_midi_inputs(api)
    except MidiError as exc:
        print(f"vjapp devices: error: {exc}", file=sys.stderr)
        return 1
    if not names:
        print("no MIDI inputs (is the controller plugged in?)")
        return 0
    print("MIDI inputs (use --midi INDEX or a part of the name):")
    for i, name in enumerate(names):
        print(f"  {i:3d}  {name}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.midi:
        return list_midi(args.midi_api)
    inputs = list_input_devices()
    if not inputs:
        print("no audio input devices (is PortAudio installed and a sound server running?)")
    else:
        print("inputs (use --input INDEX or a part of the name):")
        for d in inputs:
            mark = "*" if d.is_default else " "
            print(f" {mark}{d.index:3d}  {d.name}  ({d.max_input_channels} ch, {d.default_samplerate:g} Hz)")
    if args.outputs:
        outputs = list_output_devices()
        print("outputs:" if outputs else "no audio output devices")
        for d in outputs:
            mark = "*" if d.is_default else " "
            print(f" {mark}{d.index:3d}  {d.name}  ({d.max_output_channels} ch, {d.default_samplerate:g} Hz)")
    return 0
