"""LiveInput and FilePlayer on a real, real-time device: a private PulseAudio daemon with a null
sink. The player plays 440 Hz into the sink, the live input records the sink's monitor through
PortAudio's ``pulse`` device. Then the daemon is killed (device loss -> silence fallback) and
restarted (reconnect). See ENVIRONMENT.md, "Audio without a sound card".

Needs the Debian packages pulseaudio (brings the ALSA pulse plugin) and libportaudio2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from audio_fixtures import peak_frequency, tone
from vjapp.audio import DecodedAudio, FilePlayer, LiveInput, list_input_devices
from vjapp.audio.sources import AudioBackendError, load_sounddevice

pytestmark = pytest.mark.skipif(
    shutil.which("pulseaudio") is None, reason="pulseaudio is not installed (apt-get install pulseaudio)"
)

SINK = "vjsink"


def _wait(pred: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


@pytest.fixture
def pulse() -> Iterator[tuple[Callable[[], None], Callable[[], None]]]:
    """A private PulseAudio daemon (null sink, monitor as default source); yields (start, kill).
    PortAudio is re-initialised after the daemon starts and again after the test."""
    try:
        sd = load_sounddevice()
    except AudioBackendError as exc:
        pytest.skip(str(exc))
    run_dir = Path(tempfile.mkdtemp(prefix="vjpulse-"))
    (run_dir / "client.conf").write_text("autospawn = no\n")  # never start a default daemon
    env = {
        "XDG_RUNTIME_DIR": str(run_dir),
        "PULSE_SERVER": f"unix:{run_dir}/pulse/native",
        "PULSE_CLIENTCONFIG": str(run_dir / "client.conf"),
        "PULSE_SINK": SINK,
        "PULSE_SOURCE": f"{SINK}.monitor",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    socket = run_dir / "pulse" / "native"

    def start() -> None:
        proc = subprocess.run(
            [
                "pulseaudio", "--daemonize=yes", "--exit-idle-time=-1", "-n", "--log-level=error",
                "--load=module-native-protocol-unix auth-anonymous=1",
                f"--load=module-null-sink sink_name={SINK}",
                "--load=module-always-sink",
            ],
            env=os.environ.copy(), capture_output=True, text=True, timeout=15,
        )
        assert proc.returncode == 0, f"pulseaudio failed to start: {proc.stderr}"
        assert _wait(socket.exists, 5.0), "pulseaudio socket did not appear"

    def kill() -> None:
        subprocess.run(["pulseaudio", "--kill"], env=os.environ.copy(), capture_output=True, timeout=15)
        _wait(lambda: not socket.exists(), 5.0)

    def reinit() -> None:
        sd._terminate()  # PortAudio enumerates devices at initialisation
        sd._initialize()

    try:
        start()
        reinit()
        yield start, kill
    finally:
        kill()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reinit()
        shutil.rmtree(run_dir, ignore_errors=True)


def _tone_at_440(live: LiveInput) -> bool:
    n = live.sample_rate // 2
    if live.ring.write_index < n:
        return False
    x, _ = live.ring.latest_copy(n)
    return abs(peak_frequency(x, live.sample_rate) - 440) < 5 and float(np.sqrt(np.mean(x**2))) > 0.1


def test_live_input_hears_the_player_through_pulseaudio_and_survives_its_loss(pulse):
    start_daemon, kill_daemon = pulse
    if "pulse" not in [d.name for d in list_input_devices()]:
        pytest.skip("PortAudio lists no 'pulse' device (the ALSA pulse plugin is missing)")
    errors: list[BaseException] = []
    rate = 44_100
    player = FilePlayer(
        DecodedAudio(tone(rate, 1.0, 440, amp=0.5), rate), output_device="pulse", loop=True,
        retry_interval=0.5,
    )
    live = LiveInput("pulse", retry_interval=0.5, on_error=errors.append)
    with player, live:
        st = live.status
        assert not player.status.fallback, player.status.fallback_reason
        assert not st.fallback and st.device == "pulse", st.fallback_reason
        # The ring runs at the rate of the opened stream.
        assert st.sample_rate == live.sample_rate == int(round(live._stream.samplerate))
        assert st.block_size == live._stream.blocksize and st.latency is not None
        assert _wait(lambda: _tone_at_440(live), 8.0), "no 440 Hz tone reached the live ring"
        assert player.status.device == "pulse" and player.status.xruns >= 0

        # Device loss: the daemon dies -> silence on the wall clock, reported.
        kill_daemon()
        assert _wait(lambda: live.status.fallback, 3.0), "device loss not detected"
        st = live.status
        assert "device lost" in (st.fallback_reason or "") and st.errors >= 1 and errors
        w, t0 = live.ring.write_index, time.monotonic()
        time.sleep(0.3)
        advanced, elapsed = live.ring.write_index - w, time.monotonic() - t0
        # silence keeps coming at about real-time pace (the fallback clock's block size is the slack)
        assert 0.5 * elapsed * live.sample_rate - 4096 < advanced < 1.5 * elapsed * live.sample_rate + 4096
        assert np.all(live.ring.latest(live.sample_rate // 10)[0] == 0)
        assert _wait(lambda: player.status.fallback, 3.0)

        # The daemon comes back: both reconnect, and the tone is heard again.
        start_daemon()
        assert _wait(lambda: not live.status.fallback, 6.0), live.status.fallback_reason
        assert live.status.reconnects >= 1
        assert _wait(lambda: not player.status.fallback, 6.0), player.status.fallback_reason
        assert _wait(lambda: _tone_at_440(live), 8.0), "no tone after reconnecting"
    assert not live.status.running and not player.status.running
