"""Real virtual MIDI ports for tests: a userspace JACK server with the dummy driver (no sound card)
and virtual output ports ("controllers") on it. Registered for every test module in conftest.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Any, Callable, Iterator

import pytest

JACK_BACKEND = "mido.backends.rtmidi/UNIX_JACK"


@pytest.fixture(scope="session")
def jack_server() -> Iterator[str]:
    """A JACK server of our own (dummy driver) for the whole session; its name is in JACK_DEFAULT_SERVER."""
    jackd = shutil.which("jackd")
    if jackd is None:
        pytest.skip("jackd is not installed (Debian: apt-get install jackd2): the MIDI port tests need a JACK server")
    pytest.importorskip("mido", reason='mido is not installed (pip install "vjapp[midi]")')
    pytest.importorskip("rtmidi", reason='python-rtmidi is not installed (pip install "vjapp[midi]")')
    import rtmidi

    try:  # PortAudio (the app's audio) looks for JACK when it starts: let it start before our server is
        import sounddevice  # noqa: F401  # named, or it keeps a client that aborts its exit once the server is gone
    except (ImportError, OSError):
        pass
    name = f"vjapp-test-{os.getpid()}"
    saved = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_AUDIO_RESERVATION", "JACK_NO_START_SERVER")}
    os.environ.update(JACK_DEFAULT_SERVER=name, JACK_NO_AUDIO_RESERVATION="1", JACK_NO_START_SERVER="1")
    proc = subprocess.Popen([jackd, "-n", name, "-d", "dummy", "-r", "48000", "-p", "256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 10.0
        while True:
            try:
                probe = rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK)
                probe.delete()
                break
            except Exception:  # noqa: BLE001 - not up yet
                if proc.poll() is not None or time.monotonic() > end:
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    pytest.fail(f"jackd did not start: {err[-500:]}")
                time.sleep(0.1)
        yield name
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def controller(jack_server: str, request: pytest.FixtureRequest) -> Iterator[Callable[[str], Any]]:
    """Opens virtual output ports ("controllers") on the JACK server; closes them after the test."""
    import mido

    backend = mido.Backend(JACK_BACKEND, load=True)
    opened: list[Any] = []

    def open_port(name: str) -> Any:
        port = backend.open_output(name, virtual=True)
        opened.append(port)
        return port

    yield open_port
    for port in opened:
        if not port.closed:
            port.close()
