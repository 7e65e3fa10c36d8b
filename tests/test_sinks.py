"""Frame sinks: an NDI sender fed from a newest-wins frame slot, seen by a real NDI receiver in the
same process over loopback (size, aspect, colour); a sink that fails says so once and stops; the
Syphon/Spout sinks say what they need on a platform that cannot run them."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest

from vjapp.engine.mailbox import LatestSlot
from vjapp.output.sinks import FrameSink, NdiSink, SinkError, SpoutSink, SyphonSink, to_rgbx


@dataclass(frozen=True)
class FakeFrame:
    image: np.ndarray
    index: int
    t: float


class FakeEngine:
    """Publishes frames of one colour to a real LatestSlot at ``fps`` on its own thread."""

    def __init__(self, width: int, height: int, colour: tuple[int, int, int], fps: float = 60.0) -> None:
        self.frames: LatestSlot[FakeFrame] = LatestSlot()
        self.width, self.height, self.fps = width, height, fps
        self.colour = colour
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(1.0 / self.fps):
            image = np.empty((self.height, self.width, 3), np.uint8)
            image[...] = self.colour
            self.frames.publish(FakeFrame(image, i, time.perf_counter()))
            i += 1

    def __enter__(self) -> "FakeEngine":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


# ---------------------------------------------------------------------------------------------
# the sink thread itself, without any output library
# ---------------------------------------------------------------------------------------------


class ListSink(FrameSink):
    """Collects what it is sent; slow on purpose when asked."""

    kind = "list"

    def __init__(self, frames: Any, delay: float = 0.0, fail_after: int | None = None, **kw: Any) -> None:
        super().__init__(frames, **kw)
        self.delay, self.fail_after = delay, fail_after
        self.images: list[np.ndarray] = []
        self.closed = False

    def send(self, image: np.ndarray) -> None:
        if self.fail_after is not None and len(self.images) >= self.fail_after:
            raise OSError("the cable was pulled")
        time.sleep(self.delay)
        self.images.append(image)

    def close(self) -> None:
        self.closed = True


def test_a_slow_sink_never_holds_the_engine_back_and_counts_what_it_skipped() -> None:
    slot: LatestSlot[np.ndarray] = LatestSlot()
    sink = ListSink(lambda: slot, delay=0.05, poll_s=0.02)
    sink.start()
    try:
        t0 = time.perf_counter()
        for i in range(200):  # as fast as the engine can: publish never waits for the sink
            slot.publish(np.full((4, 6, 3), i % 256, np.uint8))
            time.sleep(0.002)
        publish_time = time.perf_counter() - t0
        assert wait_until(lambda: sink.images and int(sink.images[-1][0, 0, 0]) == 199, 5)
    finally:
        sink.stop()
    assert publish_time < 2.0  # 200 publishes at ~2 ms, however slow the sink (50 ms per frame)
    assert sink.sent == len(sink.images) < 100
    assert sink.sent + sink.skipped == 200 - int(sink.images[0][0, 0, 0])  # every frame: sent or counted
    assert sink.size == (6, 4)
    assert sink.closed


def test_a_failing_sink_reports_once_and_stops_while_frames_keep_coming() -> None:
    slot: LatestSlot[np.ndarray] = LatestSlot()
    messages: list[str] = []
    sink = ListSink(lambda: slot, fail_after=3, on_error=messages.append, poll_s=0.02)
    sink.start()
    for i in range(30):
        slot.publish(np.zeros((2, 2, 3), np.uint8))
        time.sleep(0.01)
    assert wait_until(lambda: not sink.running, 5)
    for i in range(10):  # the engine goes on publishing; nobody waits
        slot.publish(np.zeros((2, 2, 3), np.uint8))
    assert messages == ["list output stopped: OSError: the cable was pulled"]
    assert sink.error == messages[0] and sink.closed and len(sink.images) == 3
    sink.stop()


def test_a_sink_follows_a_new_engine_whose_stamps_start_again() -> None:
    engines = [LatestSlot(), LatestSlot()]
    current = [engines[0]]
    sink = ListSink(lambda: current[0], poll_s=0.02)
    sink.start()
    try:
        for i in range(5):
            engines[0].publish(np.full((2, 2, 3), 1, np.uint8))
            time.sleep(0.01)
        assert wait_until(lambda: len(sink.images) >= 1, 2)
        current[0] = engines[1]  # the bundle switched: a new engine, a new slot
        engines[1].publish(np.full((2, 2, 3), 2, np.uint8))
        assert wait_until(lambda: int(sink.images[-1][0, 0, 0]) == 2, 2)
    finally:
        sink.stop()


def test_to_rgbx_keeps_the_colours_and_fills_x() -> None:
    img = np.random.default_rng(0).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    out = to_rgbx(img)
    assert out.shape == (3, 5, 4) and out.flags.c_contiguous
    np.testing.assert_array_equal(out[..., :3], img)
    assert (out[..., 3] == 255).all()
    with pytest.raises(ValueError, match="uint8"):
        to_rgbx(img.astype(np.float32))


# ---------------------------------------------------------------------------------------------
# NDI: a real sender and a real receiver in this process, over loopback
# ---------------------------------------------------------------------------------------------


class NdiReceiver:
    """A receiver that finds ``source_name`` by asking 127.0.0.1 directly (no multicast needed)."""

    def __init__(self, ndi: Any, source_name: str) -> None:
        self.ndi = ndi
        assert ndi.initialize()
        create = ndi.FindCreate()
        create.show_local_sources = True
        create.extra_ips = "127.0.0.1"
        self.finder = ndi.find_create_v2(create)
        source = None
        end = time.monotonic() + 10
        while source is None and time.monotonic() < end:
            ndi.find_wait_for_sources(self.finder, 200)
            source = next((s for s in ndi.find_get_current_sources(self.finder) if s.ndi_name == source_name), None)
        assert source is not None, f"NDI source {source_name!r} not found on 127.0.0.1"
        recv = ndi.RecvCreateV3()
        recv.color_format = ndi.RECV_COLOR_FORMAT_RGBX_RGBA
        recv.bandwidth = ndi.RECV_BANDWIDTH_HIGHEST
        self.recv = ndi.recv_create_v3(recv)
        ndi.recv_connect(self.recv, source)

    def frames(self, n: int, timeout: float = 10.0) -> list[tuple[int, int, float, np.ndarray]]:
        """The next ``n`` video frames as (xres, yres, aspect, RGB mean)."""
        ndi, got = self.ndi, []
        end = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < end:
            kind, video, _, _ = ndi.recv_capture_v2(self.recv, 100)
            if kind == ndi.FRAME_TYPE_VIDEO:
                got.append((video.xres, video.yres, video.picture_aspect_ratio,
                            video.data[..., :3].reshape(-1, 3).mean(0)))
                ndi.recv_free_video_v2(self.recv, video)
        return got

    def close(self) -> None:
        self.ndi.recv_destroy(self.recv)
        self.ndi.find_destroy(self.finder)


@pytest.fixture
def ndi() -> Any:
    return pytest.importorskip("NDIlib", reason='NDI tests need `pip install "vjapp[ndi]"` (ndi-python)')


@pytest.mark.parametrize("width,height,colour", [(160, 90, (128, 128, 128)), (96, 96, (30, 100, 200))])
def test_ndi_receiver_sees_the_engines_frames_at_their_size_aspect_and_colour(ndi, width, height, colour) -> None:
    name = f"vjapp-test-{width}x{height}"
    errors: list[str] = []
    with FakeEngine(width, height, colour) as engine:
        sink = NdiSink(name, lambda: engine.frames, on_error=errors.append, frame_rate=60)
        sink.start()
        try:
            assert sink.wait_open(10), errors
            assert sink.source_name.endswith(f"({name})")
            receiver = NdiReceiver(ndi, sink.source_name)
            try:
                frames = receiver.frames(8)
            finally:
                receiver.close()
        finally:
            sink.stop()
    assert not errors
    assert len(frames) == 8, "the receiver got fewer than 8 frames in 10 s"
    assert sink.sent >= 8
    for xres, yres, aspect, mean in frames[-3:]:
        assert (xres, yres) == (width, height)
        assert aspect == pytest.approx(width / height, rel=1e-3)
        # NDI always compresses (SpeedHQ, 4:2:2 YUV): a solid colour comes back within a few levels
        # (measured here: grey 128 -> 127, blue 200 -> 191.5)
        np.testing.assert_allclose(mean, colour, atol=10)


def test_ndi_sender_sends_nothing_until_a_receiver_connects(ndi) -> None:
    with FakeEngine(32, 32, (255, 0, 0)) as engine:
        sink = NdiSink("vjapp-test-idle", lambda: engine.frames)
        sink.start()
        try:
            assert sink.wait_open(10)
            time.sleep(0.3)
            assert sink.connections == 0
            assert sink.sent == 0 and sink.size is None
        finally:
            sink.stop()
    assert not sink.running


def test_ndi_sink_without_the_library_says_how_to_get_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "NDIlib", None)  # import NDIlib -> ImportError
    sink = NdiSink("x", lambda: None)
    with pytest.raises(SinkError, match=r'NDI output needs `pip install "vjapp\[ndi\]"`'):
        sink.start()
    assert not sink.running
    with pytest.raises(ValueError, match="must not be empty"):
        NdiSink("  ", lambda: None)


# ---------------------------------------------------------------------------------------------
# Syphon and Spout: only where they can run
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS Syphon can run")
def test_syphon_elsewhere_says_it_needs_macos() -> None:
    sink = SyphonSink("vjapp", lambda: None)
    with pytest.raises(SinkError) as err:
        sink.start()
    assert str(err.value) == 'Syphon needs macOS and `pip install "vjapp[syphon]"`'
    assert "\n" not in str(err.value) and not sink.running


@pytest.mark.skipif(sys.platform == "win32", reason="on Windows Spout can run")
def test_spout_elsewhere_says_it_needs_windows() -> None:
    sink = SpoutSink("vjapp", lambda: None)
    with pytest.raises(SinkError) as err:
        sink.start()
    assert str(err.value) == 'Spout needs Windows and `pip install "vjapp[spout]"`'
    assert not sink.running


# ---------------------------------------------------------------------------------------------
# the whole app: `vjapp gui --ndi NAME` on the tiny bundle, watched by an NDI receiver
# ---------------------------------------------------------------------------------------------


def test_app_with_ndi_sends_its_output_and_follows_a_new_bundle(ndi, qtbot, tmp_path, tiny_bundle_dir) -> None:
    from vjapp.app import build_app
    from vjapp.gui import default_args

    args = default_args(bundle=str(tiny_bundle_dir), windowed=True, osc_port=0, mute=True, threads=1,
                        settings=str(tmp_path / "settings.ini"), data_dir=str(tmp_path / "data"),
                        record_dir=str(tmp_path / "rec"), ndi="vjapp-app-test")
    ctx = build_app(args)
    try:
        ctx.show()
        assert ctx.ndi is not None and ctx.ndi.wait_open(10)
        receiver = NdiReceiver(ndi, ctx.ndi.source_name)
        try:
            frames = receiver.frames(3, timeout=30)
            size = ctx.bundle.info.display_size
            assert len(frames) == 3
            assert all((x, y) == (size, size) and a == pytest.approx(1.0) for x, y, a, _ in frames)
            old_engine, sent = ctx.engine, ctx.ndi.sent
            ctx._switch_bundle(ctx.bundle, ctx.bundle_path, "the same bundle again")  # a new engine
            assert ctx.engine is not old_engine
            assert len(receiver.frames(3, timeout=30)) == 3  # the NDI source kept going
            assert ctx.ndi.sent >= sent + 3
        finally:
            receiver.close()
        ctx.set_ndi(False)  # what /vjapp/ndi 0 does
        assert ctx.ndi is None
    finally:
        ctx.shutdown()


def test_ndi_source_names_are_checked_like_the_other_options() -> None:
    from vjapp.gui import default_args, validate

    args = default_args(ndi="  stage left ")
    validate(args)
    assert args.ndi == "stage left"
    for bad in ("", "a (b)", "x" * 64, "tab\there"):
        with pytest.raises(ValueError, match="argument --ndi: an NDI source name is 1..63"):
            validate(default_args(ndi=bad))
