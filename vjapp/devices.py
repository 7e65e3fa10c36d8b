"""``vjapp devices``: the audio devices PortAudio sees (inputs for live capture, outputs for playback)."""

from __future__ import annotations

import argparse

from vjapp.audio import list_input_devices, list_output_devices


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--outputs", action="store_true", help="also list output devices")


def run(args: argparse.Namespace) -> int:
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
