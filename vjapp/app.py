"""The desktop app: builds every object of a live show in one place and wires them together.

``build_app(args)`` makes, in order: the Qt application and settings, the bridge (engine -> Qt)
with exception hooks, the controls mailbox, the bundle (the chosen one, else the embedded
default, else a random one, and the window says which), the audio source (a file, an input
device, else the demo audio, else silence), the :class:`~vjapp.engine.engine.Engine` thread, the
:class:`~vjapp.output.recorder.Recorder`, presets, the :class:`~vjapp.osc.OscServer`, and the two
windows. Nothing here is a singleton: tests build as many apps as they like, each with its own
objects. ``run(args)`` builds, shows, runs the Qt event loop and shuts everything down.

Failures never end the show: a missing device or an unreadable file falls back to the demo audio
(or silence) with a message; a bad bundle keeps the current one with a message; an OSC port in
use disables OSC with a message. Every message appears in the control window's log and status bar.

Threads (DESIGN.md section 2): the engine thread renders and calls ``_on_frame`` (which only
hands the frame to the recorder when recording); the GUI pulls the newest frame through the
bridge; OSC actions arrive on the OSC thread and are posted to the GUI thread by
:class:`~vjapp.ui.bridge.GuiInvoker`; bundles load on a short-lived loader thread.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import logging
import os
import random
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from PyQt6.QtCore import QRect, QSettings, QSize, QStandardPaths, QTimer
from PyQt6.QtGui import QGuiApplication
from PyQt6.QtWidgets import QApplication

from model.bundle import Bundle
from vjapp.audio import (
    AudioDecodeError,
    AudioSource,
    FilePlayer,
    LiveInput,
    Segment,
    SyntheticSource,
    list_input_devices,
)
from vjapp.bundles import DEMO_AUDIO_DIR, open_bundle, stand_in_bundle
from vjapp.engine.controls import MAX_SEED, ControlError, Controls, aspect_ratio, frame_shape, set_path
from vjapp.engine.engine import Engine, EngineConfig, Frame
from vjapp.engine.mailbox import Mailbox
from vjapp.gui import parse_host_port, parse_size
from vjapp.osc import OscError, OscServer
from vjapp.output.recorder import Recorder, RecorderStatus, RecordingError, default_recording_path
from vjapp.output.sinks import NDI_INSTALL, NdiSink, SinkError
from vjapp.presets import Preset, PresetError, PresetLibrary, PresetPlayer
from vjapp.ui.bridge import EngineBridge, GuiInvoker, LogToBridge, install_exception_hooks
from vjapp.ui.main_window import MainWindow, NdiView, SourceView
from vjapp.ui.output_window import OutputWindow, place_beside
from vjapp.ui.quit_signals import QuitSignals

log = logging.getLogger(__name__)

# Whose warnings reach the GUI's message panel, and who already reports there by itself
# (the app's own messages; the engine's errors arrive through its on_error callback).
LIBRARY_LOGGERS = ("vjapp", "model")
LOGGERS_THAT_REPORT_THEMSELVES = ("vjapp.app", "vjapp.engine.engine")

__all__ = ["AppContext", "build_app", "run", "parse_size", "parse_host_port", "demo_audio_path", "BundleMismatch"]

AUDIO_SUFFIXES = (".ogg", ".flac", ".wav", ".mp3")
SILENCE_RATE = 22_050


class BundleMismatch(ValueError):
    """A converted generator whose W+ shape the current bundle's audio models cannot drive."""


class _LoadFailed(Exception):
    """A bundle could not be loaded or built; the message says why (the current bundle stays)."""


def demo_audio_path() -> Path | None:
    """The demo audio file shipped in ``resources/demo`` (None if it is missing)."""
    if not DEMO_AUDIO_DIR.is_dir():
        return None
    files = sorted(p for p in DEMO_AUDIO_DIR.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    return files[0] if files else None


def _user_dir(location: QStandardPaths.StandardLocation, fallback: str) -> Path:
    found = QStandardPaths.writableLocation(location)
    return Path(found) if found else Path.home() / fallback


def default_threads() -> int:
    """Torch threads for the engine: every core but one (GUI, audio, OSC and recorder share it)."""
    return max(1, (os.cpu_count() or 2) - 1)


class AppContext:
    """Every object of one running app, and the actions the control window calls (its Backend).

    Build it with :func:`build_app`; call :meth:`show` then run the Qt loop; :meth:`shutdown`
    stops every thread (also on :meth:`quit`).
    """

    def __init__(self, args: argparse.Namespace, qapp: QApplication, settings: QSettings) -> None:
        self.args = args
        self.qapp = qapp
        self.settings = settings
        self.bridge = EngineBridge()
        self.invoker = GuiInvoker(on_error=lambda text: self.bridge.report(text, "error"))
        self._restore_hooks: Callable[[], None] | None = None
        self._shut_down = False
        self._in_event_loop = False
        self._recording = False  # read by the engine thread in _on_frame
        self.quit_code = 0
        data = Path(args.data_dir).expanduser() if args.data_dir else None
        self.data_dir = data or _user_dir(QStandardPaths.StandardLocation.AppDataLocation, ".local/share/vjapp")
        self.record_dir = (Path(args.record_dir).expanduser() if args.record_dir
                           else _user_dir(QStandardPaths.StandardLocation.MoviesLocation, "Videos") / "vjapp")
        self._converted_dir = self.data_dir / "converted"

        self.controls: Mailbox[Controls] = Mailbox(Controls())
        self.bundle: Bundle = None  # type: ignore[assignment]  # set by build_app before use
        self.bundle_path: Path | None = None
        self._bundle_description = "-"
        self._bundle_warning: str | None = None
        self._bundle_loader: threading.Thread | None = None
        self.engine: Engine | None = None
        self.source: AudioSource | None = None
        self.source_key = "silence"
        self.source_description = "-"
        self.recorder: Recorder | None = None
        self.presets: PresetPlayer | None = None
        self.osc: OscServer | None = None
        self.osc_error: str | None = None
        self.midi: Any = None  # vjapp.control.midi.MidiInput with --midi (mido is optional: not imported here)
        self.midi_error: str | None = None
        self._midi_clock_live = False
        self.link: Any = None  # vjapp.audio.link_clock.LinkClock with --link (aalink is optional, GPL)
        self.ndi: NdiSink | None = None  # the NDI output while it runs (--ndi, OSC /vjapp/ndi)
        self.output: OutputWindow | None = None
        self.window: MainWindow | None = None
        self.fullscreen_at_start = False
        self.place_windows_at_start = (True, True)  # (control window, output window): no saved geometry
        self._log_handler: logging.Handler | None = None

    # ================================================================== messages
    def message(self, text: str, level: str = "info") -> None:
        """Show ``text`` in the control window (any thread) and log it: cut to a readable length,
        and a repeat of the same kind within a couple of seconds only counted (the bridge logs
        and shows one "N more messages like this" line for them)."""
        self.bridge.report(text, level, logger=log)

    # ================================================================== bundle
    @property
    def bundle_description(self) -> str:
        return self._bundle_description

    @property
    def bundle_warning(self) -> str | None:
        return self._bundle_warning

    @property
    def bundle_busy(self) -> bool:
        return self._bundle_loader is not None and self._bundle_loader.is_alive()

    @property
    def converted_dir(self) -> Path:
        return self._converted_dir

    def _describe_bundle(self, bundle: Bundle, where: str) -> None:
        info = bundle.info
        self._bundle_description = (f"{where}\n{info.resolution}x{info.resolution} px · W+ {info.num_ws}x{info.w_dim}"
                                    f" · {info.mel.n_mels} mels @ {info.mel.sample_rate} Hz")
        if "randomly initialized" in where:
            self._bundle_warning = ("No trained default bundle is installed yet: you are seeing a RANDOMLY "
                                    "INITIALIZED bundle (abstract textures; prompts and sound have no learned meaning).")
        elif not info.is_trained:
            self._bundle_warning = f"This bundle is not fully trained (untrained: {', '.join(info.untrained_parts)})."
        else:
            self._bundle_warning = None

    def _initial_bundle(self) -> None:
        path = self.args.bundle
        try:
            bundle, where = open_bundle(path)
            self.bundle_path = Path(path) if path else None
        except Exception as exc:  # noqa: BLE001 - any bad bundle: say so, play the default
            self.message(f"could not load bundle {path}: {exc}; playing the default instead", "error")
            self.bundle_path = None
            try:
                bundle, where = open_bundle(None)
            except Exception as exc2:  # noqa: BLE001 - even the embedded default is broken
                self.message(f"the embedded default bundle does not load either: {exc2}", "error")
                bundle = stand_in_bundle()
                where = "a randomly initialized bundle (the default bundle failed to load)"
        self.bundle = bundle
        self._describe_bundle(bundle, where)

    def open_bundle(self, path: str) -> None:
        """Load a bundle directory on a loader thread; switch engines when it is ready.

        A bundle that fails to load leaves the current one playing, with a message.
        """
        from model.bundle import load_bundle

        def load() -> tuple[Bundle, Path]:
            try:
                return load_bundle(path), Path(path)
            except Exception as exc:  # noqa: BLE001 - CheckpointError and anything else: keep the show
                raise _LoadFailed(f"could not load bundle {path}: {exc}; keeping the current one") from exc

        self._load_in_background(f"loading bundle {path}…", load)

    def adopt_generator(self, stem: str) -> None:
        """Play a converted generator with the current bundle's audio models (and CLIP).

        A converted generator alone is not a bundle: the sound needs F_a, E_a and the predictor,
        which produce W+ offsets of one shape. When the generator's ``num_ws`` and ``w_dim`` match
        the current bundle, a new bundle (this generator + the current audio models and CLIP) is
        saved under ``data_dir/bundles/<name>`` and loaded like any other; otherwise nothing
        changes and the message explains why (the audio models would need training for it).
        Runs on the loader thread (a large generator takes seconds to copy and save).
        """
        from model.bundle import load_bundle

        def build() -> tuple[Bundle, Path]:
            try:
                target = self.combine_with_generator(stem)
            except BundleMismatch as exc:
                raise _LoadFailed(str(exc)) from exc
            except Exception as exc:  # noqa: BLE001 - CheckpointError, OSError, ...
                raise _LoadFailed(f"could not use the converted generator {stem}: {exc}") from exc
            try:
                return load_bundle(target), target
            except Exception as exc:  # noqa: BLE001
                raise _LoadFailed(f"could not load the bundle built at {target}: {exc}") from exc

        self._load_in_background(f"building a bundle around {Path(stem).name}…", build)

    def _load_in_background(self, note: str, make: Callable[[], tuple[Bundle, Path]]) -> None:
        """Run ``make`` on the loader thread; switch to its bundle on the GUI thread, or report why not."""
        if self.bundle_busy:
            self.message("a bundle is still loading; wait for it", "warning")
            return
        self.message(note)

        def work() -> None:
            try:
                bundle, path = make()
            except _LoadFailed as exc:
                text = str(exc)  # `exc` is unbound after the except block; the GUI runs this later
                self.message(text, "error")
                self.invoker.call(lambda: self._bundle_failed(text))
                return
            self.invoker.call(lambda: self._switch_bundle(bundle, path, str(path)))

        self._bundle_loader = threading.Thread(target=work, name="vjapp-bundle-loader", daemon=True)
        self._bundle_loader.start()

    def _bundle_failed(self, text: str) -> None:
        if self.window is not None and self.window.convert_label.isVisible():
            self.window.convert_label.setText(text)

    def combine_with_generator(self, stem: str) -> Path:
        """Save current audio models + CLIP + the generator at ``stem`` as a bundle; returns its dir.

        Raises :class:`BundleMismatch` when the W+ shapes differ.
        """
        from model.bundle import save_bundle
        from model.generators import load_generator

        G = load_generator(stem)
        info = self.bundle.info
        if (G.num_ws, G.w_dim) != (info.num_ws, info.w_dim):
            raise BundleMismatch(
                f"{Path(stem).name}: this generator has W+ of {G.num_ws} x {G.w_dim} (num_ws x w_dim), but the "
                f"current bundle's audio models (E_a and the recurrent predictor) produce {info.num_ws} x "
                f"{info.w_dim}: they cannot drive it. Train a bundle for this generator (vjapp-train) or load "
                f"a bundle whose generator has {G.num_ws} layers of width {G.w_dim} first."
            )
        parts = {name: copy.deepcopy(getattr(self.bundle, name)).to("cpu")
                 for name in ("clip", "audio_encoder", "sound_inversion", "predictor")}
        trained = dict(info.trained, generator=True)
        new_info = dataclasses.replace(
            info, resolution=G.img_resolution, output_size=0, trained=trained,
            notes=(f"generator converted from {Path(stem).name}; audio models and CLIP from "
                   f"{self.bundle_path or 'the bundle playing at the time'} (trained for another generator: "
                   f"reactivity directions are not tuned to this one). {info.notes}").strip(),
        )
        target = self.data_dir / "bundles" / Path(stem).name
        save_bundle(target, Bundle(new_info, G, **parts))
        log.info("built bundle %s from the converted generator and the current audio models", target)
        return target

    def _switch_bundle(self, bundle: Bundle, path: Path | None, where: str) -> None:
        """GUI thread: stop the old engine, start one on ``bundle`` (same controls and source)."""
        if self._recording:
            self.set_recording(False)
            self.message("recording stopped: the bundle changed", "warning")
        old = self.engine
        if old is not None:
            old.stop()
        self.bundle = bundle
        self.bundle_path = path
        self._describe_bundle(bundle, where)
        self._start_engine()
        self.message(f"playing bundle {where}")

    # ================================================================== engine
    def _start_engine(self) -> None:
        threads = self.args.threads if self.args.threads > 0 else default_threads()
        config = EngineConfig(device=self.args.device, dtype=self.args.dtype, threads=threads)
        sources = [self.source] if self.source is not None else []
        self.engine = Engine(self.bundle, self.controls, sources, config,
                             on_frame=self._on_frame, on_error=self.bridge.report_error)
        self.engine.start()
        self.bridge.set_engine(self.engine)
        self._attach_midi_clock()

    def _on_frame(self, frame: Frame) -> None:
        """Engine thread: hand the frame to the recorder when recording (never blocks)."""
        if self._recording and self.recorder is not None:
            self.recorder.submit(frame.image, frame.t)

    # ================================================================== controls
    def set_control(self, path: str, value: Any) -> None:
        """Write one control (from a widget) into the mailbox and tell OSC feedback."""
        try:
            self.controls.update(lambda c: set_path(c, path, value))
        except ControlError as exc:
            self.message(str(exc), "warning")
            return
        if self.osc is not None:
            try:
                self.osc.notify_ui_change(path, value)
            except ControlError:
                pass

    def tap_tempo(self) -> None:
        """A tap of the beat (button, OSC): the engine's tap tempo takes it."""
        if self.engine is not None:
            self.engine.tap_tempo()

    def reroll_seed(self) -> None:
        seed = random.randint(0, MAX_SEED)
        self.set_control("seed", seed)

    # ================================================================== audio
    def input_devices(self) -> list[tuple[Any, str]]:
        return [(d.index, f"{d.name} ({d.hostapi})" + (" [default]" if d.is_default else ""))
                for d in list_input_devices()]

    def _file_player(self, path: str | Path) -> FilePlayer:
        return FilePlayer(path, play_audio=not self.args.mute, loop=True,
                          on_error=lambda exc: self.message(f"audio: {exc}", "error"))

    def _set_source(self, source: AudioSource, key: str, description: str) -> None:
        if self._recording:
            self.set_recording(False)
            self.message("recording stopped: the audio source changed", "warning")
        source.start()
        if self.engine is not None:
            self.engine.set_sources([source])
        old, self.source = self.source, source
        self.source_key = key
        self.source_description = description
        if old is not None:
            old.stop()

    def use_demo_audio(self) -> None:
        demo = demo_audio_path()
        if demo is not None:
            try:
                self._set_source(self._file_player(demo), "demo", f"demo audio ({demo.name}, looping)")
                return
            except (AudioDecodeError, OSError) as exc:
                self.message(f"the demo audio {demo} does not play ({exc}); continuing in silence", "error")
        else:
            self.message(f"no demo audio in {DEMO_AUDIO_DIR}; continuing in silence", "warning")
        silence = SyntheticSource(Segment("silence", 1.0), sample_rate=SILENCE_RATE, loop=True)
        self._set_source(silence, "silence", "silence (no audio source)")

    def open_audio(self, path: str) -> None:
        """Play a file; an unreadable one leaves the current source playing (with a message)."""
        try:
            player = self._file_player(path)
        except (AudioDecodeError, OSError, ValueError) as exc:
            self.message(f"cannot play {path}: {exc}", "error")
            if self.source is None:
                self.use_demo_audio()
            return
        self._set_source(player, f"file:{path}", f"file {Path(path).name} ({player.duration:.1f} s)")

    def use_input(self, device: Any) -> None:
        """Record from an input device (index or name); a missing one leaves the current source."""
        spec: Any = int(device) if isinstance(device, str) and device.strip().isdigit() else device
        matches = [d for d in list_input_devices()
                   if (isinstance(spec, int) and d.index == spec)
                   or (isinstance(spec, str) and spec.casefold() in d.name.casefold())]
        if not matches:
            self.message(f"no audio input device matching {device!r}"
                         + ("" if self.source is not None else "; playing the demo audio instead"), "error")
            if self.source is None:
                self.use_demo_audio()
            return
        dev = matches[0]
        live = LiveInput(dev.index, on_error=lambda exc: self.message(f"audio input: {exc}", "error"))
        self._set_source(live, f"input:{dev.index}", f"input {dev.name} ({dev.hostapi})")

    def _player(self) -> FilePlayer | None:
        return self.source if isinstance(self.source, FilePlayer) else None

    def play(self) -> None:
        if (p := self._player()) is not None:
            p.play()

    def pause(self) -> None:
        if (p := self._player()) is not None:
            p.pause()

    def toggle_play(self) -> None:
        if (p := self._player()) is not None:
            p.pause() if not p.paused else p.play()

    def seek(self, seconds: float) -> None:
        if (p := self._player()) is not None:
            p.seek(seconds)

    def set_loop(self, on: bool) -> None:
        if (p := self._player()) is not None:
            p.loop = bool(on)

    def source_view(self) -> SourceView:
        src = self.source
        if src is None:
            return SourceView("silence", "no source", None, None, 0, False)
        status = src.status
        extra = ""
        if status.fallback and isinstance(src, (FilePlayer, LiveInput)):
            extra = (" · on the wall clock (no output device: silent here)" if isinstance(src, FilePlayer)
                     else f" · no device, silence: {status.fallback_reason}")
        elif status.device:
            extra = f" · {status.device}"
        description = f"{self.source_description} · {status.sample_rate} Hz x{status.channels}{extra}"
        player = self._player()
        return SourceView(self.source_key, description, status, src.ring, int(src.sample_rate),
                          player is not None, player.loop if player is not None else None)

    # ================================================================== presets
    def preset_names(self) -> list[str]:
        return self.presets.library.names() if self.presets is not None else []

    @property
    def current_preset(self) -> str | None:
        return self.presets.current if self.presets is not None else None

    def load_preset(self, name: str | int) -> None:
        if self.presets is None:
            return
        try:
            preset = self.presets.load(name)
        except PresetError as exc:
            self.message(str(exc), "error")
            return
        self.message(f"preset {preset.name}" + (f": {preset.description}" if preset.description else ""))
        self._apply_preset_midi(preset)

    def step_preset(self, delta: int) -> None:
        if self.presets is None:
            return
        try:
            preset = self.presets.step(delta)
        except PresetError as exc:
            self.message(str(exc), "error")
            return
        self.message(f"preset {preset.name}")
        self._apply_preset_midi(preset)

    def save_preset(self, name: str, with_midi: bool = False) -> None:
        """Save the controls as user preset ``name``; ``with_midi``: also the open MIDI
        controller's mapping (applied again when the preset loads with that controller open)."""
        if self.presets is None:
            return
        midi = self._preset_midi() if with_midi else None
        if with_midi and midi is None:
            self.message("no MIDI input is open: the preset is saved without a MIDI mapping", "warning")
        try:
            path = self.presets.library.save(name, self.controls.get()[1], midi=midi)
        except PresetError as exc:
            self.message(str(exc), "error")
            return
        self.message(f"saved preset {name} to {path}" + (f" with the MIDI mapping of {midi['controller']}"
                                                         if midi is not None else ""))

    def _preset_midi(self) -> dict[str, Any] | None:
        """The open controller's mapping as a preset carries it, or None without a MIDI input."""
        midi = self.midi
        if midi is None or midi.controller is None:
            return None
        return dict(midi.mapping.to_dict(), controller=midi.controller)

    def _apply_preset_midi(self, preset: Preset) -> None:
        """A preset carrying a MIDI mapping: use it when its controller is the open MIDI input."""
        data, midi = preset.midi, self.midi
        if data is None or midi is None:
            return
        if data["controller"] != midi.controller:
            self.message(f"preset {preset.name}: its MIDI mapping is for {data['controller']}, "
                         f"not {midi.controller}; the current mapping stays")
            return
        from vjapp.control.midi_map import MidiMap

        midi.set_mapping(MidiMap.from_dict(data))
        self.message(f"preset {preset.name}: MIDI mapping of {midi.controller} "
                     f"({len(midi.mapping.bindings)} bindings)")

    def _preset_applied(self, preset: Preset, old: Controls, new: Controls) -> None:
        if self.osc is not None:
            self.osc.notify_ui_diff(old, new)

    # ================================================================== recording
    def set_recording(self, on: bool) -> None:
        """Start or stop recording the output (and the audio heard) to ``record_dir``.

        A take records what the audience sees at one size from start to end: the size chosen in
        the control window's Record box, else the output size when Record was pressed ("native"
        is the bundle's display size, which may be larger than the generator's resolution) as
        the short side, in the aspect of the output when Record was pressed. Frames of another
        size or aspect (changed mid-take) are scaled to fit it, keeping their aspect (black bars
        where the shapes differ): a take is one file of one size.
        """
        rec = self.recorder
        if rec is None or on == self._recording:
            return
        if not on:
            self._recording = False
            status = rec.stop()
            if status.error is not None:
                return  # the failure was reported once, when it happened (_recorder_error)
            if status.file_removed:
                self.message("recording stopped before the first frame: nothing saved")
                return
            w, h = status.size or (0, 0)
            self.message(f"saved {status.path} ({status.elapsed_s:.1f} s, {status.frames_written} frames at "
                         f"{w}x{h}, {status.frames_dropped} not recorded)")
            return
        _, controls = self.controls.get()
        output = self.bundle.info.display_size if controls.size == "native" else int(controls.size)
        chosen = self.window.chosen_record_size() if self.window is not None else None
        size = chosen or output
        height, width = frame_shape(size, controls.aspect)
        src = self.source
        path = default_recording_path(self.record_dir)
        try:
            # t0 on the engine's clock (Frame.t): audio from the ring index now and video from
            # this instant start together, however late the first frame arrives
            t0 = self.engine.clock.now() if self.engine is not None else None
            rec.start(path, width, height, controls.fps,
                      audio_ring=src.ring if src is not None else None,
                      audio_rate=int(src.sample_rate) if src is not None else None, t0=t0)
        except (RecordingError, ValueError) as exc:
            self.message(f"cannot record: {exc}", "error")
            return
        self._recording = True
        self.message(f"recording to {path} at {width}x{height}")

    def recorder_status(self) -> RecorderStatus:
        return self.recorder.status() if self.recorder is not None else RecorderStatus()

    def _recorder_error(self, text: str) -> None:
        """Recorder thread: the take failed (disk full, ...). One message says so; the button follows."""
        removed = self.recorder is not None and self.recorder.status().file_removed
        self.message(f"recording failed: {text}" + ("; nothing reached the disk, so no file was kept" if removed else ""),
                     "error")
        self.invoker.call(lambda: setattr(self, "_recording", False))

    # ================================================================== frame sinks
    def _start_sinks(self) -> None:
        """Start the outputs asked for on the command line (``--ndi NAME``)."""
        if self.args.ndi:
            self.set_ndi(True)

    def _current_frames(self) -> Any:
        """Any thread: the frame slot of the engine playing now (a new bundle starts a new engine)."""
        engine = self.engine
        return engine.frames if engine is not None else None

    def ndi_view(self) -> NdiView:
        """What the Output box shows about NDI: on or off, the source name, or why it cannot run."""
        name = self.args.ndi or "vjapp"
        if importlib.util.find_spec("NDIlib") is None:
            return NdiView(available=False, on=False, text=NDI_INSTALL)
        sink = self.ndi
        if sink is None:
            return NdiView(available=True, on=False, text=f"off (source name {name!r})")
        return NdiView(available=True, on=True, text=f"sending as {sink.source_name or name!r}")

    def set_ndi(self, on: bool) -> None:
        """Turn the NDI output on (as ``--ndi NAME``, else "vjapp") or off; a failure is one message."""
        if not on:
            if self.ndi is not None:
                self.ndi.stop()
                self.ndi = None
                self.message("NDI output off")
            return
        if self.ndi is not None and self.ndi.running:
            return
        name = self.args.ndi or "vjapp"
        _, controls = self.controls.get()
        sink = NdiSink(name, self._current_frames, on_error=lambda text: self.message(text, "error"),
                       frame_rate=controls.fps)
        try:
            sink.start()
        except SinkError as exc:
            self.message(f"NDI output is off: {exc}", "error")
            return
        self.ndi = sink
        self.message(f"NDI output on: source {name!r}, at the output's size")

    # ================================================================== OSC
    def _osc_actions(self) -> dict[str, Callable[[Any], None]]:
        """OSC thread -> GUI thread: every action is posted, so it runs where the widgets live."""
        post = self.invoker.call
        return {
            "preset": lambda arg: post(lambda: self.load_preset(arg)),
            "preset/next": lambda _: post(lambda: self.step_preset(1)),
            "preset/prev": lambda _: post(lambda: self.step_preset(-1)),
            "record": lambda on: post(lambda: self.set_recording(bool(on))),
            "source/play": lambda _: post(self.play),
            "source/pause": lambda _: post(self.pause),
            "source/toggle": lambda _: post(self.toggle_play),
            "seed/reroll": lambda _: post(self.reroll_seed),
            "ndi": lambda on: post(lambda: self.set_ndi(bool(on))),
            "tempo/tap": lambda _: self.tap_tempo(),  # timing matters: straight from the OSC thread
        }

    def _start_osc(self) -> None:
        if self.args.no_osc:
            self.osc_error = "disabled (--no-osc)"
            return
        feedback = parse_host_port(self.args.osc_feedback) if self.args.osc_feedback else None
        osc = OscServer(self.controls, self._osc_actions(), host=self.args.osc_host, port=self.args.osc_port,
                        feedback=feedback)
        try:
            osc.start()
        except OscError as exc:
            self.osc_error = str(exc)
            self.message(f"OSC is off: {exc}", "error")
            return
        self.osc = osc

    def osc_summary(self) -> str:
        if self.osc is None:
            return f"OSC off: {self.osc_error or 'not started'}"
        s = self.osc.stats()
        fb = self.args.osc_feedback
        bad = s.get("malformed", 0) + s.get("bad_args", 0) + s.get("non_finite", 0) + s.get("dropped_non_utf8", 0)
        return (f"listening on {self.osc.host}:{self.osc.port}" + (f" · feedback to {fb}" if fb else "")
                + f"\nreceived {s.get('received', 0)} · applied {s.get('applied', 0)} · actions {s.get('actions', 0)}"
                + f" · unknown {s.get('unknown_address', 0)} · rejected {bad}"
                + (f" · feedback sent {s.get('feedback_sent', 0)}" if fb else ""))

    # ================================================================== MIDI
    def _midi_actions(self) -> dict[str, Callable[[Any], None]]:
        """The OSC actions; ``record`` also takes None (a pad's press) as "toggle"."""
        post = self.invoker.call
        return dict(self._osc_actions(),
                    record=lambda on: post(lambda: self.set_recording(not self._recording if on is None else bool(on))))

    def _start_midi(self) -> None:
        """With ``--midi``: open the port, its saved mapping (``data_dir/midi``) and MIDI clock.
        A missing port or MIDI system is a message; the show goes on without MIDI."""
        if not getattr(self.args, "midi", None):
            return
        self._open_midi(self.args.midi)

    def _open_midi(self, port: str) -> None:
        """Open MIDI input ``port`` (index or part of a name) as ``self.midi``, or say why not."""
        from vjapp.control.midi import MidiError, MidiInput
        from vjapp.control.midi_map import MidiMapStore

        midi = MidiInput(port, self.controls, self._midi_actions(), api=self.args.midi_api,
                         store=MidiMapStore(self.data_dir / "midi"), on_message=self.message,
                         on_clock=self._midi_clock_arrived)
        try:
            midi.start()
        except MidiError as exc:
            self.midi_error = str(exc)
            self.message(f"MIDI is off: {exc}", "error")
            return
        self.midi = midi
        self.midi_error = None

    def midi_inputs(self) -> list[str]:
        """The MIDI inputs there are now (empty, with the reason in ``midi_error``, when MIDI cannot run)."""
        from vjapp.control.midi import MidiError, list_midi_inputs

        try:
            return list_midi_inputs(self.args.midi_api)
        except MidiError as exc:
            if self.midi is None:
                self.midi_error = str(exc)
            return []

    def midi_port(self) -> str | None:
        """The MIDI input open now (its full port name), or None."""
        return self.midi.port_name if self.midi is not None else None

    def use_midi(self, port: str | None) -> None:
        """Close the MIDI input, then open ``port`` (None: no MIDI input)."""
        old, self.midi = self.midi, None
        if old is not None:
            old.stop()
            self._midi_clock_live = False
            if self.engine is not None and self.link is None and self.engine.beat_clock.external is old.clock:
                self.engine.beat_clock.set_external(None)
            self.message(f"MIDI input {old.port_name} closed")
        if port is None:
            self.midi_error = "no MIDI input chosen"
            return
        self._open_midi(port)

    def midi_summary(self) -> str:
        """The MIDI box's line: the port and its counters, and what MIDI learn waits for."""
        midi = self.midi
        if midi is None:
            return f"MIDI off: {self.midi_error or 'no MIDI input chosen'}"
        learning = midi.mapping.learning
        return midi.summary() + (f"\nMIDI learn: move a control for {learning}" if learning else "")

    def _midi_clock_arrived(self) -> None:
        """MIDI listener thread: clock ticks (again): the engine's beat clock may follow them."""
        first = not self._midi_clock_live
        self._midi_clock_live = True
        self._attach_midi_clock()
        if first:
            _, controls = self.controls.get()
            self.message("MIDI clock arrives: " + ("the tempo follows it" if controls.rhythm.tempo_source == "external"
                                                   else "choose the tempo source 'external' to follow it"))

    def _attach_midi_clock(self) -> None:
        """The engine's external tempo: Ableton Link when it is on (--link), else MIDI clock once
        it arrives (a new engine after a bundle switch gets it again)."""
        engine = self.engine
        if engine is None:
            return
        if self.link is not None:
            engine.beat_clock.set_external(self.link)
        elif self._midi_clock_live and self.midi is not None:
            engine.beat_clock.set_external(self.midi.clock)

    def _start_link(self) -> None:
        """With ``--link``: join the local Ableton Link session as the external tempo source."""
        if not getattr(self.args, "link", False):
            return
        from vjapp.audio.link_clock import LinkClock, LinkError

        link = LinkClock(on_error=lambda text: self.message(text, "error"))
        try:
            link.start()
        except LinkError as exc:
            self.message(f"Ableton Link is off: {exc}", "error")
            return
        self.link = link
        self._attach_midi_clock()
        self.message(f"Ableton Link: joined the session ({link.peers} other peers); choose the tempo source "
                     "'external' to follow it")

    def midi_learn(self, target: str) -> None:
        """The next knob moved or pad hit on the MIDI input drives ``target`` (a control path or an action)."""
        if self.midi is None:
            self.message(f"MIDI learn needs a MIDI input (--midi PORT): {self.midi_error or 'none was given'}",
                         "warning")
            return
        try:
            self.midi.start_learn(target)
        except ValueError as exc:
            self.message(str(exc), "warning")
            return
        self.message(f"MIDI learn: move a knob or hit a pad for {target}")

    def midi_binding(self, target: str) -> str | None:
        """What drives ``target`` on the open MIDI input (``CC 21 (ch 1)``), or None."""
        binding = self.midi.mapping.binding_for(target) if self.midi is not None else None
        return binding.describe().rsplit(" -> ", 1)[0] if binding is not None else None

    def midi_forget(self, target: str) -> None:
        """Forget the knob or pad bound to ``target`` (the saved mapping too)."""
        if self.midi is not None and self.midi.forget(target):
            self.message(f"MIDI: {target} is no longer mapped")

    # ================================================================== lifecycle
    def show(self) -> None:
        """Show both windows (output fullscreen on ``--screen`` unless ``--windowed``), start the
        timers, and start recording with ``--record``.

        Windows without a saved place are laid out here, not by the window manager (which may not
        be there to do it): the output window beside the control window, or on its own screen.
        """
        assert self.window is not None and self.output is not None
        self.window.show()
        place_control, place_output = self.place_windows_at_start
        if place_output:
            self._place_output_window(fit_control=place_control)
        self.output.show()
        if self.fullscreen_at_start:
            self.output.set_fullscreen(True)
        self.bridge.start()
        self.window.start()
        if self.args.record:
            self.set_recording(True)
        if self.args.quit_after is not None:
            QTimer.singleShot(int(self.args.quit_after * 1000), self.quit)

    def _place_output_window(self, fit_control: bool) -> None:
        """Centre the output on its screen when that is not the control window's, else put it
        beside the control window (narrowing a control window that has no saved size, if needed)."""
        assert self.window is not None and self.output is not None
        screens = QGuiApplication.screens()
        if not screens:
            return
        target = screens[self.output.screen_index if 0 <= self.output.screen_index < len(screens) else 0]
        home = self.window.screen() or QGuiApplication.primaryScreen()
        margins = self.window.frameGeometry().size() - self.window.geometry().size()
        frame_size = self.output.size() + margins
        if target.geometry() != home.geometry():
            frame = QRect(target.availableGeometry().topLeft(), frame_size)
            frame.moveCenter(target.availableGeometry().center())
        else:
            area = home.availableGeometry()
            if fit_control:
                self._fit_control_window(area, frame_size)
            frame = place_beside(area, self.window.frameGeometry(), frame_size,
                                 self.output.minimumSize() + margins)
        self.output.move(frame.topLeft())
        self.output.resize(frame.size() - margins)

    def _fit_control_window(self, area: QRect, output_frame: QSize, gap: int = 8) -> None:
        """Shrink the control window into ``area``, leaving beside it the room of an output window
        of ``output_frame`` (at most a third of the screen's width)."""
        assert self.window is not None
        frame = self.window.frameGeometry()
        margins = frame.size() - self.window.geometry().size()
        room = min(output_frame.width(), area.width() // 3) + gap
        width = min(frame.width(), area.width() - room)
        height = min(frame.height(), area.height())
        if (width, height) == (frame.width(), frame.height()) and area.contains(frame):
            return
        self.window.resize(QSize(width, height) - margins)
        self.window.move(area.topLeft())

    def quit(self, code: int = 0) -> None:
        """Screenshot if asked, stop everything, leave the event loop (once)."""
        if self._shut_down:
            return
        self.quit_code = code
        if self.args.screenshot:
            try:
                self.save_screenshot(self.args.screenshot)
            except Exception as exc:  # noqa: BLE001 - a failed screenshot must not block the quit
                log.error("screenshot failed: %s", exc)
                self.quit_code = self.quit_code or 1
        self.shutdown()
        if self._in_event_loop:  # exit() outside exec() would make every later event loop return at once
            self.qapp.exit(self.quit_code)

    def exec(self) -> int:
        """Run the Qt event loop until :meth:`quit` (or the control window closes); returns the exit code."""
        self._in_event_loop = True
        try:
            code = self.qapp.exec()
        finally:
            self._in_event_loop = False
            self.shutdown()
        return int(code or self.quit_code)

    def save_screenshot(self, path: str | Path) -> Path:
        """A PNG of the output window: what the X server shows when there is one, else its paint."""
        assert self.output is not None
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        pixmap = None
        if QGuiApplication.platformName() not in ("offscreen", "minimal") and self.output.isVisible():
            screen = self.output.screen() or QGuiApplication.primaryScreen()
            pixmap = screen.grabWindow(int(self.output.winId()))
        if pixmap is None or pixmap.isNull():
            pixmap = self.output.grab()
        if not pixmap.save(str(out), "PNG"):
            raise OSError(f"could not write {out}")
        log.info("wrote screenshot %s (%dx%d)", out, pixmap.width(), pixmap.height())
        return out

    def shutdown(self) -> None:
        """Stop recorder, OSC, engine and source; save window state. Idempotent."""
        if self._shut_down:
            return
        self._shut_down = True
        self.bridge.stop()
        if self.window is not None:
            try:
                self.window.save_settings()
            except Exception:  # noqa: BLE001
                log.exception("saving the window state failed")
        if self._recording:
            self.set_recording(False)
        if self.osc is not None:
            self.osc.stop()
        if self.midi is not None:
            self.midi.stop()
        if self.link is not None:
            self.link.stop()
        if self.ndi is not None:
            self.ndi.stop()
        if self.engine is not None:
            self.engine.stop()
        if self.source is not None:
            self.source.stop()
        if self.output is not None:
            self.output.allow_close = True
            self.output.close()
        if self.window is not None:
            self.window.close()
        if self._restore_hooks is not None:
            self._restore_hooks()
            self._restore_hooks = None
        if self._log_handler is not None:
            for name in LIBRARY_LOGGERS:
                logging.getLogger(name).removeHandler(self._log_handler)
            self._log_handler = None


def build_app(args: argparse.Namespace, qapp: QApplication | None = None) -> AppContext:
    """Build (and start the threads of) a whole app from parsed ``vjapp gui`` arguments."""
    if qapp is None:
        existing = QApplication.instance()
        qapp = existing if isinstance(existing, QApplication) else QApplication(sys.argv[:1])
    qapp.setApplicationName("vjapp")
    qapp.setOrganizationName("vjapp")
    settings = (QSettings(str(args.settings), QSettings.Format.IniFormat) if args.settings
                else QSettings("vjapp", "vjapp"))
    ctx = AppContext(args, qapp, settings)
    ctx._restore_hooks = install_exception_hooks(lambda text: ctx.bridge.report(text, "error"))
    ctx._log_handler = LogToBridge(ctx.bridge, skip=LOGGERS_THAT_REPORT_THEMSELVES)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).addHandler(ctx._log_handler)

    ctx.controls.put(Controls(fps=args.fps, size=parse_size(args.size), aspect=args.aspect))
    ctx._initial_bundle()
    ctx.controls.update(lambda c: c.replace(model_rate=ctx.bundle.info.model_rate))

    if args.audio:
        ctx.open_audio(args.audio)
    elif args.input is not None:
        ctx.use_input(args.input)
    if ctx.source is None:
        ctx.use_demo_audio()

    ctx.recorder = Recorder(on_error=ctx._recorder_error)
    library = PresetLibrary(user_dir=ctx.data_dir / "presets" if args.data_dir else None)
    for path, problem in library.errors:
        ctx.message(f"preset {path.name} skipped: {problem}", "warning")
    ctx.presets = PresetPlayer(library, ctx.controls, on_applied=ctx._preset_applied)
    ctx._start_osc()
    ctx._start_midi()
    ctx._start_link()
    ctx._start_engine()
    ctx._start_sinks()

    # Fullscreen on --screen N; without it on the second screen (a projector), and with a single
    # screen in a window, so the output never hides the control window unasked.
    screens = QGuiApplication.screens()
    screen = args.screen if args.screen is not None else (1 if len(screens) > 1 else 0)
    if not 0 <= screen < len(screens):
        ctx.message(f"there is no screen {screen} (screens: 0..{len(screens) - 1}); the output goes to screen 0",
                    "warning")
        screen = 0
    ctx.fullscreen_at_start = not args.windowed and (args.screen is not None or len(screens) > 1)
    ctx.output = OutputWindow(screen_index=screen)
    ctx.output.resize(ctx.output.size_for(aspect_ratio(args.aspect)))  # a saved place and size win
    ctx.window = MainWindow(ctx, ctx.output, settings=settings)
    restored = ctx.window.restore_settings()
    ctx.place_windows_at_start = ("main/geometry" not in restored, "output/geometry" not in restored)
    ctx.bridge.frame.connect(ctx.window.on_frame)
    ctx.bridge.analysis.connect(ctx.window.on_analysis)
    ctx.bridge.rhythm.connect(ctx.window.on_rhythm)
    ctx.bridge.stats.connect(ctx.window.on_stats)
    ctx.bridge.message.connect(ctx.window.show_message)
    ctx.window.closing.connect(lambda: ctx.quit(ctx.quit_code))
    return ctx


def run(args: argparse.Namespace) -> int:
    """Build, show, run the event loop, shut down; returns the exit code.

    SIGINT (Ctrl+C) and SIGTERM stop the show as closing the control window does: the recording
    is finished (its last fragment written), the window state saved, every thread stopped, and no
    traceback. The exit code is then 128 + the signal number (130 after SIGINT, 143 after SIGTERM),
    the shells' convention for "ended by that signal", so a script can tell an interrupted show
    from one that ended by itself (0). A signal during loading quits as soon as loading ends; a
    second signal while the first is handled ends the process at once (see
    :mod:`vjapp.ui.quit_signals`).
    """
    with QuitSignals() as signals:
        ctx = build_app(args)
        signals.attach(lambda signum: _quit_on_signal(ctx, signum))
        if signals.received is not None:
            _quit_on_signal(ctx, signals.received)
            return ctx.quit_code
        ctx.show()
        return ctx.exec()


def _quit_on_signal(ctx: AppContext, signum: int) -> None:
    log.warning("%s: stopping the show (finishing the recording, saving the window state)",
                signal.Signals(signum).name)
    ctx.quit(128 + signum)
