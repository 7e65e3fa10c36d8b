"""Frame sinks: the show's frames to other programs (NDI on the network, Syphon, Spout).

Every sink has one sender thread (DESIGN.md section 2) that waits on the engine's newest-wins
frame slot (:attr:`vjapp.engine.engine.Engine.frames`), takes the newest frame, converts the
uint8 ``[H, W, 3]`` RGB image to what the sink needs and sends it. The engine never waits for a
sink: a sink slower than the engine simply skips the frames it had no time for, and counts them
(:attr:`FrameSink.skipped`).

The slot is found through a callable (``frames()``), asked again whenever a wait times out, so a
sink follows the app when a new bundle starts a new engine (a new slot whose stamps restart).

A sink that fails (the library is missing, the sender cannot be created, a send raises) calls
``on_error`` once with a one-line message and stops itself; the show goes on.

Which NDI binding, and why: ``ndi-python`` (MIT, wheels for Linux x86_64/aarch64 and Windows
carrying the NDI runtime ``libndi``) is a one-to-one binding of the NDI SDK, so a receiver can be
pointed at a sender by address (``extra_ips``) where multicast discovery does not work. The NDI
runtime itself is under the NDI SDK licence (see README).
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, Callable

import numpy as np

from vjapp.engine.mailbox import LatestSlot

log = logging.getLogger(__name__)

__all__ = ["SinkError", "FrameSink", "NdiSink", "SyphonSink", "SpoutSink", "to_rgbx"]

FrameSlotGetter = Callable[[], "LatestSlot[Any] | None"]

NDI_INSTALL = 'NDI output needs `pip install "vjapp[ndi]"` (ndi-python, which carries the NDI runtime)'
SYPHON_INSTALL = 'Syphon needs macOS and `pip install "vjapp[syphon]"`'
SPOUT_INSTALL = 'Spout needs Windows and `pip install "vjapp[spout]"`'


class SinkError(RuntimeError):
    """A sink cannot start (missing library or platform) or stopped working; the text says why."""


def to_rgbx(image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 ``[H, W, 3]`` RGB -> C-contiguous ``[H, W, 4]`` RGBX (X = 255); reuses ``out`` if it fits."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 [H, W, 3] RGB frame, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if out is None or out.shape != (h, w, 4):
        out = np.empty((h, w, 4), dtype=np.uint8)
        out[..., 3] = 255
    out[..., :3] = image
    return out


class FrameSink:
    """A sender thread from the engine's frame slot to one output; subclasses open, send, close.

    ``frames`` returns the current engine's frame slot (None while there is no engine); the items
    in it are frames with an ``image`` attribute (or bare images). ``on_error`` receives the one
    message of a sink that fails.
    """

    kind = "sink"

    def __init__(self, frames: FrameSlotGetter, on_error: Callable[[str], None] | None = None,
                 poll_s: float = 0.1) -> None:
        self._frames = frames
        self._on_error = on_error
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.sent = 0  # frames handed to the output (not those a sink chose not to send)
        self.skipped = 0  # frames the engine made that this sink never took (it was busy)
        self.size: tuple[int, int] | None = None  # (width, height) of the last frame sent
        self.error: str | None = None

    # ------------------------------------------------------------------ subclass hooks
    def check(self) -> None:
        """Raise :class:`SinkError` when this sink cannot run here (library, platform)."""

    def open(self) -> None:
        """Create the sender (on the sender thread)."""

    def send(self, image: np.ndarray) -> bool | None:
        """Send one uint8 ``[H, W, 3]`` RGB frame (on the sender thread); False: not sent, on purpose."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the sender (on the sender thread); must not raise."""

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Check the sink can run (raises :class:`SinkError` at once if not), start its thread."""
        if self.running:
            return
        self.check()
        self._stop.clear()
        self.error = None
        self._thread = threading.Thread(target=self._run, name=f"vjapp-sink-{self.kind}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and release the output (idempotent)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("the %s sink did not stop within %.0f s", self.kind, timeout)
        self._thread = None

    def _fail(self, text: str) -> None:
        self.error = text
        self._stop.set()
        log.error("%s", text)
        if self._on_error is not None:
            try:
                self._on_error(text)
            except Exception:  # noqa: BLE001 - a broken callback must not hide the failure
                log.exception("reporting a %s sink failure failed", self.kind)

    def _run(self) -> None:
        try:
            self.open()
        except Exception as exc:  # noqa: BLE001 - any failure: one message, the show goes on
            self._fail(f"{self.kind} output is off: {exc}")
            return
        try:
            self._loop()
        except Exception as exc:  # noqa: BLE001
            self._fail(f"{self.kind} output stopped: {type(exc).__name__}: {exc}")
        finally:
            try:
                self.close()
            except Exception:  # noqa: BLE001
                log.exception("closing the %s sink failed", self.kind)

    def _loop(self) -> None:
        slot: LatestSlot[Any] | None = None
        stamp = 0
        while not self._stop.is_set():
            current = self._frames()
            if current is not slot:  # a new engine (new bundle): its stamps start again
                slot, stamp = current, 0
            if slot is None:
                self._stop.wait(self._poll_s)
                continue
            got = slot.wait_newer(stamp, timeout=self._poll_s)
            if got is None or self._stop.is_set():
                continue
            new_stamp, item = got
            if stamp > 0 and new_stamp > stamp + 1:
                self.skipped += new_stamp - stamp - 1
            stamp = new_stamp
            image = np.asarray(getattr(item, "image", item))
            if self.send(image) is False:
                continue
            self.sent += 1
            self.size = (int(image.shape[1]), int(image.shape[0]))

    def stats(self) -> dict[str, Any]:
        return {"kind": self.kind, "running": self.running, "sent": self.sent, "skipped": self.skipped,
                "size": self.size, "error": self.error}


# ================================================================== NDI
def _import_ndi() -> Any:
    try:
        import NDIlib  # type: ignore[import-not-found]
    except ImportError as exc:
        raise SinkError(f"{NDI_INSTALL} ({exc})") from None
    return NDIlib


class NdiSink(FrameSink):
    """NDI sender named ``name``: each frame as RGBX at its own size, aspect width/height.

    Receivers on the network see it as ``HOST (name)``; :attr:`source_name` is that full name once
    the sender is open. When no receiver is connected, frames are not converted nor sent (NDI would
    drop them anyway), so an idle NDI output costs nothing.
    """

    kind = "NDI"

    def __init__(self, name: str, frames: FrameSlotGetter, on_error: Callable[[str], None] | None = None,
                 frame_rate: float = 30.0, poll_s: float = 0.1) -> None:
        super().__init__(frames, on_error, poll_s)
        if not name or not name.strip():
            raise ValueError("an NDI source name must not be empty")
        self.name = name
        self.frame_rate = frame_rate
        self.source_name: str | None = None
        self._ndi: Any = None
        self._sender: Any = None
        self._video: Any = None
        self._rgbx: np.ndarray | None = None
        self._opened = threading.Event()

    def check(self) -> None:
        self._ndi = _import_ndi()

    def open(self) -> None:
        ndi = self._ndi
        if not ndi.initialize():
            raise SinkError("the NDI runtime does not start on this machine (NDIlib.initialize() failed: "
                            "the CPU lacks SSE4.2, or libndi is broken)")
        create = ndi.SendCreate()
        create.ndi_name = self.name
        create.clock_video = False  # the engine paces the frames; never block the sender on NDI's clock
        create.clock_audio = False
        sender = ndi.send_create(create)
        if sender is None:
            raise SinkError(f"could not create an NDI sender named {self.name!r}")
        self._sender = sender
        self._video = ndi.VideoFrameV2()
        self._video.FourCC = ndi.FOURCC_VIDEO_TYPE_RGBX
        self.source_name = ndi.send_get_source_name(sender).ndi_name
        log.info("NDI: sending as %s", self.source_name)
        self._opened.set()

    def wait_open(self, timeout: float) -> bool:
        """Block until the sender exists (tests, messages); False on timeout or failure."""
        return self._opened.wait(timeout)

    @property
    def connections(self) -> int:
        """Receivers connected now (0 before the sender is open)."""
        if self._sender is None:
            return 0
        return int(self._ndi.send_get_no_connections(self._sender, 0))

    def send(self, image: np.ndarray) -> bool:
        if self.connections == 0:
            return False
        self._rgbx = to_rgbx(image, self._rgbx)
        h, w = self._rgbx.shape[:2]
        frame = self._video
        frame.data = self._rgbx  # sets xres, yres and the line stride from the array
        frame.FourCC = self._ndi.FOURCC_VIDEO_TYPE_RGBX
        frame.picture_aspect_ratio = w / h
        frame.frame_rate_N = int(round(self.frame_rate * 1000))
        frame.frame_rate_D = 1000
        self._ndi.send_send_video_v2(self._sender, frame)  # synchronous: the buffer is free again after
        return True

    def close(self) -> None:
        self._opened.clear()
        if self._sender is not None:
            self._ndi.send_destroy(self._sender)
            self._sender = None


# ================================================================== Syphon (macOS)
class SyphonSink(FrameSink):
    """Syphon (Metal) server named ``name``: macOS only, with ``syphon-python``."""

    kind = "Syphon"

    def __init__(self, name: str, frames: FrameSlotGetter, on_error: Callable[[str], None] | None = None,
                 poll_s: float = 0.1) -> None:
        super().__init__(frames, on_error, poll_s)
        self.name = name
        self._syphon: Any = None
        self._server: Any = None
        self._texture: Any = None
        self._texture_size: tuple[int, int] | None = None
        self._rgbx: np.ndarray | None = None

    def check(self) -> None:
        if sys.platform != "darwin":
            raise SinkError(SYPHON_INSTALL)
        try:
            import syphon  # type: ignore[import-not-found]
            from syphon.utils import numpy as syphon_numpy  # type: ignore[import-not-found]
            from syphon.utils import raw as syphon_raw  # type: ignore[import-not-found]
        except ImportError as exc:
            raise SinkError(f"{SYPHON_INSTALL} ({exc})") from None
        self._syphon = (syphon, syphon_numpy, syphon_raw)

    def open(self) -> None:
        syphon, _, _ = self._syphon
        self._server = syphon.SyphonMetalServer(self.name)

    def send(self, image: np.ndarray) -> None:
        _, syphon_numpy, syphon_raw = self._syphon
        self._rgbx = to_rgbx(image, self._rgbx)
        h, w = self._rgbx.shape[:2]
        if self._texture_size != (w, h):
            self._texture = syphon_raw.create_mtl_texture(self._server.device, w, h)
            self._texture_size = (w, h)
        syphon_numpy.copy_image_to_mtl_texture(self._rgbx, self._texture)
        self._server.publish_frame_texture(self._texture)

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


# ================================================================== Spout (Windows)
GL_RGBA = 0x1908  # OpenGL's enum value (PyOpenGL not needed for one constant)


class SpoutSink(FrameSink):
    """Spout sender named ``name``: Windows only, with ``SpoutGL``."""

    kind = "Spout"

    def __init__(self, name: str, frames: FrameSlotGetter, on_error: Callable[[str], None] | None = None,
                 poll_s: float = 0.1) -> None:
        super().__init__(frames, on_error, poll_s)
        self.name = name
        self._spout: Any = None
        self._sender: Any = None
        self._rgbx: np.ndarray | None = None

    def check(self) -> None:
        if sys.platform != "win32":
            raise SinkError(SPOUT_INSTALL)
        try:
            import SpoutGL  # type: ignore[import-not-found]
        except ImportError as exc:
            raise SinkError(f"{SPOUT_INSTALL} ({exc})") from None
        self._spout = SpoutGL

    def open(self) -> None:
        self._sender = self._spout.SpoutSender()
        self._sender.setSenderName(self.name)

    def send(self, image: np.ndarray) -> None:
        self._rgbx = to_rgbx(image, self._rgbx)
        h, w = self._rgbx.shape[:2]
        if not self._sender.sendImage(self._rgbx, w, h, GL_RGBA, False, 0):
            raise SinkError("SpoutGL could not send the frame (no OpenGL/DirectX context?)")

    def close(self) -> None:
        if self._sender is not None:
            self._sender.releaseSender()
            self._sender = None

