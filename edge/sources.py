"""Where frames come from: a camera (picamera2 on a Pi, OpenCV elsewhere), a watched folder,
or single images; and when a camera frame is worth classifying (the trigger).

A source is an iterator of `Frame | None`: None is an idle tick (roughly every `poll_s`) that
lets the runner ping the watchdog and swap models while nothing is happening.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge.config import SourceConfig, TriggerConfig
from edge.decided import DecidedFiles, file_key
from wastesort.preprocess import IMAGE_SUFFIXES

log = logging.getLogger(__name__)


class SourceError(Exception):
    """The source cannot be opened (no camera, no such folder, a missing optional extra)."""


@dataclass
class Frame:
    """One picture: encoded bytes (files) or an RGB uint8 array (cameras)."""

    name: str
    data: bytes | None = None
    array: np.ndarray | None = None
    captured_at: float = field(default_factory=time.time)
    item: int = 0
    """Frames of the same trigger share an item number; a new item resets the debouncer."""
    key: str | None = None
    """The file's identity where the source remembers what it decided (`edge.decided`)."""


class Source(Protocol):
    def frames(self, stop: threading.Event) -> Iterator[Frame | None]: ...

    def close(self) -> None: ...


# --- files ---------------------------------------------------------------------------------


class FolderSource:
    """Every image in a folder, oldest first; with `watch`, also the ones that arrive later.

    Each file is one item. Files still being written are skipped until their size has been
    stable for one poll, so a half-copied JPEG is not classified as corrupt.

    With `decided` (the runner's memory, `edge.decided`), frames carry the file's key and a
    watched folder skips the files decided before a restart; `--once` decides every file it
    is asked to (a trial), under the same event ids as before.
    """

    def __init__(
        self,
        path: Path,
        *,
        watch: bool = True,
        poll_s: float = 0.5,
        decided: DecidedFiles | None = None,
    ) -> None:
        if not path.is_dir():
            raise SourceError(f"source folder {path} does not exist")
        self.path = path
        self.watch = watch
        self.poll_s = poll_s
        self.decided = decided
        self._seen: set[Path] = set()
        self._sizes: dict[Path, int] = {}
        self._keys: dict[Path, str] = {}

    def _ready(self) -> list[Path]:
        found: dict[Path, tuple[float, int]] = {}
        keys: dict[Path, str] = {}
        for path in self.path.rglob("*"):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                info = path.stat()
            except OSError:  # gone since the listing
                continue
            found[path] = (info.st_mtime, info.st_size)
            if self.decided is not None:
                name = str(path.relative_to(self.path))
                keys[path] = file_key(name, info.st_size, info.st_mtime_ns)
        self._seen &= found.keys()  # forget removed files (and a file put back is new)
        self._sizes = {p: size for p, size in self._sizes.items() if p in found}
        self._keys = keys
        if self.decided is not None and self.watch:
            self.decided.retain(keys.values())
        order = sorted(found, key=lambda p: (found[p][0], str(p)) if self.watch else str(p))
        ready = []
        for path in order:
            if path in self._seen:
                continue
            if self.watch and self.decided is not None and keys[path] in self.decided:
                self._seen.add(path)  # decided before a restart
                continue
            if self.watch:
                size = found[path][1]
                if self._sizes.get(path) != size:
                    self._sizes[path] = size
                    continue
            ready.append(path)
        return ready

    def frames(self, stop: threading.Event) -> Iterator[Frame | None]:
        item = 0
        first = True
        while not stop.is_set():
            ready = self._ready()
            if first and self.watch and not ready:
                ready = self._ready()  # sizes recorded once; existing files count as stable
            first = False
            for path in ready:
                if stop.is_set():
                    return
                self._seen.add(path)
                self._sizes.pop(path, None)
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    log.warning("cannot read %s: %s", path, exc)
                    continue
                item += 1
                name = str(path.relative_to(self.path))
                yield Frame(name=name, data=data, item=item, key=self._keys.get(path))
            if not self.watch:
                return
            yield None
            stop.wait(self.poll_s)

    def close(self) -> None:
        pass


class ImageSource:
    """One image file: one frame."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise SourceError(f"source image {path} does not exist")
        self.path = path

    def frames(self, stop: threading.Event) -> Iterator[Frame | None]:
        yield Frame(name=self.path.name, data=self.path.read_bytes(), item=1)

    def close(self) -> None:
        pass


# --- cameras -------------------------------------------------------------------------------


class Camera(Protocol):
    def capture(self) -> np.ndarray:
        """An RGB uint8 (H, W, 3) frame."""
        ...

    def close(self) -> None: ...


class Picamera2Camera:
    def __init__(self, width: int, height: int) -> None:
        from picamera2 import Picamera2  # type: ignore[import-not-found]  # noqa: PLC0415

        self._cam = Picamera2()
        config = self._cam.create_still_configuration(
            main={"size": (width, height), "format": "RGB888"}
        )
        self._cam.configure(config)
        self._cam.start()

    def capture(self) -> np.ndarray:
        # picamera2's "RGB888" is BGR in memory order (libcamera naming); flip to RGB.
        return np.ascontiguousarray(self._cam.capture_array()[..., ::-1])

    def close(self) -> None:
        self._cam.stop()
        self._cam.close()


class OpenCvCamera:
    def __init__(self, index: int, width: int, height: int) -> None:
        import cv2  # type: ignore[import-not-found]  # noqa: PLC0415

        self._cv2 = cv2
        self._cap = cv2.VideoCapture(index)
        if not self._cap.isOpened():
            raise SourceError(f"OpenCV cannot open camera {index}")
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)

    def capture(self) -> np.ndarray:
        ok, frame = self._cap.read()
        if not ok:
            raise SourceError("the camera returned no frame")
        return self._cv2.cvtColor(frame, self._cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self._cap.release()


def open_camera(config: SourceConfig) -> Camera:
    """picamera2 on a Pi, else OpenCV; both are optional extras, asked for by name."""
    tried = []
    if config.camera in ("auto", "picamera2"):
        try:
            return Picamera2Camera(config.width, config.height)
        except ImportError:
            tried.append("picamera2 is not installed (apt install python3-picamera2)")
    if config.camera in ("auto", "opencv"):
        try:
            return OpenCvCamera(config.camera_index, config.width, config.height)
        except ImportError:
            tried.append("OpenCV is not installed (pip install opencv-python-headless)")
    raise SourceError("no camera library: " + "; ".join(tried))


def thumbnail(array: np.ndarray, size: int = 32) -> np.ndarray:
    """A small grey float image in 0..1 for cheap frame differencing."""
    grey = array.astype(np.float32).mean(axis=2) / 255.0
    h, w = grey.shape
    ys = np.linspace(0, h - 1, size).astype(int)
    xs = np.linspace(0, w - 1, size).astype(int)
    return grey[np.ix_(ys, xs)]


class Trigger:
    """When to classify camera frames.

    `continuous`: every frame, at `fps`. `change`: when a frame differs from the last one
    that triggered by more than `change_threshold`, then a burst of frames. `button`: a burst
    after each press of a GPIO button.
    """

    def __init__(self, config: TriggerConfig, burst: int, *, pin_factory: Any = None) -> None:
        self.config = config
        self.burst = config.burst or burst
        self.period = 1.0 / config.fps
        self._reference: np.ndarray | None = None
        self._button: Any = None
        self._pressed = threading.Event()
        if config.mode == "button":
            from gpiozero import Button  # noqa: PLC0415

            self._button = Button(config.button_pin, pin_factory=pin_factory)
            self._button.when_pressed = self._pressed.set

    def changed(self, array: np.ndarray) -> bool:
        thumb = thumbnail(array)
        if self._reference is None:
            self._reference = thumb
            return False
        difference = float(np.abs(thumb - self._reference).mean())
        if difference > self.config.change_threshold:
            self._reference = thumb
            return True
        return False

    def settle(self, array: np.ndarray) -> None:
        """After a burst, the scene as it is now becomes the reference."""
        self._reference = thumbnail(array)

    def wait_for_press(self, stop: threading.Event, timeout: float) -> bool:
        if self._pressed.wait(min(timeout, 1.0)):
            self._pressed.clear()
            return True
        return False

    def close(self) -> None:
        if self._button is not None:
            self._button.close()


class CameraSource:
    def __init__(
        self,
        config: SourceConfig,
        *,
        burst: int,
        camera: Camera | None = None,
        pin_factory: Any = None,
    ) -> None:
        self.trigger = Trigger(config.trigger, burst, pin_factory=pin_factory)
        self.camera = camera or open_camera(config)
        self.mode = config.trigger.mode

    def _paced(self, stop: threading.Event) -> Iterator[np.ndarray]:
        next_at = time.monotonic()
        while not stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return
            next_at = max(next_at + self.trigger.period, time.monotonic())
            yield self.camera.capture()

    def frames(self, stop: threading.Event) -> Iterator[Frame | None]:
        item = 0
        count = 0
        if self.mode == "button":
            while not stop.is_set():
                if not self.trigger.wait_for_press(stop, 1.0):
                    yield None
                    continue
                item += 1
                for n, array in enumerate(self._paced(stop)):
                    count += 1
                    yield Frame(name=f"frame-{count}", array=array, item=item)
                    if n + 1 >= self.trigger.burst:
                        break
            return
        remaining = 0
        for array in self._paced(stop):
            if self.mode == "continuous":
                count += 1
                yield Frame(name=f"frame-{count}", array=array, item=0)
                continue
            if remaining == 0 and self.trigger.changed(array):
                item, remaining = item + 1, self.trigger.burst
            if remaining:
                count += 1
                remaining -= 1
                yield Frame(name=f"frame-{count}", array=array, item=item)
                if remaining == 0:
                    self.trigger.settle(array)
            else:
                yield None

    def close(self) -> None:
        self.trigger.close()
        self.camera.close()


def parse_source(text: str) -> SourceConfig:
    """`folder:DIR`, `image:PATH` or `camera[:INDEX]` from the command line."""
    kind, _, rest = text.partition(":")
    if kind in ("folder", "image") and rest:
        return SourceConfig(kind=kind, path=Path(rest))
    if kind == "camera":
        return SourceConfig(kind="camera", camera_index=int(rest or 0))
    raise ValueError(f"--source {text!r}: expected folder:DIR, image:PATH or camera[:INDEX]")


def open_source(
    config: SourceConfig,
    *,
    once: bool = False,
    burst: int = 1,
    pin_factory: Any = None,
    decided: DecidedFiles | None = None,
) -> Source:
    if config.kind == "folder":
        return FolderSource(
            Path(config.path or "."),
            watch=config.watch and not once,
            poll_s=config.poll_s,
            decided=decided,
        )
    if config.kind == "image":
        return ImageSource(Path(config.path or "."))
    return CameraSource(config, burst=burst, pin_factory=pin_factory)
