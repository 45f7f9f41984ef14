"""Debouncing, `uncertain`, and the camera triggers (a fake camera, gpiozero's mock pins)."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from edge.config import SourceConfig, TriggerConfig
from edge.decide import Debouncer
from edge.sources import CameraSource, FolderSource, SourceError, Trigger, parse_source
from tests.conftest import LABELS, SAMPLES, sample_bytes
from wastesort.classifier import Prediction


def pred(label: str, confidence: float, version: str = "v1") -> Prediction:
    rest = (1 - confidence) / (len(LABELS) - 1)
    scores = {name: (confidence if name == label else rest) for name in LABELS}
    return Prediction(label, confidence, scores, label, version)


def feed(debouncer: Debouncer, frames: list[tuple[str, float]], threshold: float = 0.5):
    return [debouncer.update(pred(label, conf), threshold) for label, conf in frames]


def test_k_consecutive_confident_frames_decide_a_class():
    out = feed(Debouncer(k=3), [("glass", 0.9), ("glass", 0.8), ("glass", 0.7)])
    assert out[:2] == [None, None]
    assert out[2].label == "glass"
    assert out[2].confidence == pytest.approx(0.8)
    assert out[2].frames == 3
    assert out[2].model_version == "v1"


def test_a_disagreeing_frame_restarts_the_streak():
    debouncer = Debouncer(k=3, window=6)
    out = feed(
        debouncer,
        [("glass", 0.9), ("glass", 0.9), ("metal", 0.9), ("metal", 0.9), ("metal", 0.9)],
    )
    assert out[:4] == [None] * 4
    assert out[4].label == "metal"
    assert out[4].frames == 5


def test_frames_below_the_models_threshold_do_not_count():
    debouncer = Debouncer(k=2, window=3)
    out = feed(debouncer, [("glass", 0.4), ("glass", 0.45), ("glass", 0.49)], threshold=0.5)
    assert out[:2] == [None, None]
    assert out[2].label == "uncertain"
    assert out[2].uncertain
    assert out[2].confidence == 0.49  # the best frame seen


def test_window_without_agreement_is_uncertain_then_a_new_item_starts():
    debouncer = Debouncer(k=3)  # window 5
    frames = [("glass", 0.9), ("metal", 0.9), ("glass", 0.9), ("metal", 0.9), ("paper", 0.9)]
    out = feed(debouncer, frames)
    assert out[:4] == [None] * 4
    assert out[4].label == "uncertain"
    assert feed(debouncer, [("paper", 0.9)] * 3)[2].label == "paper"


def test_configured_threshold_overrides_the_models():
    debouncer = Debouncer(k=1, threshold=0.95)
    assert feed(debouncer, [("glass", 0.9)], threshold=0.1)[0].label == "uncertain"
    assert feed(debouncer, [("glass", 0.96)], threshold=0.99)[0].label == "glass"


def test_reset_forgets_the_item_in_progress():
    debouncer = Debouncer(k=2)
    feed(debouncer, [("glass", 0.9)])
    debouncer.reset()
    assert feed(debouncer, [("glass", 0.9)]) == [None]


@pytest.mark.parametrize(("k", "window"), [(0, None), (3, 2)])
def test_bad_debouncer_settings_are_refused(k, window):
    with pytest.raises(ValueError, match="must be at least"):
        Debouncer(k=k, window=window)


# --- sources and triggers --------------------------------------------------------------------


def rgb(name: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(sample_bytes(name))).convert("RGB"))


class FakeCamera:
    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = frames
        self.i = 0
        self.closed = False

    def capture(self) -> np.ndarray:
        frame = self.frames[min(self.i, len(self.frames) - 1)]
        self.i += 1
        return frame

    def close(self) -> None:
        self.closed = True


def camera_config(**trigger: object) -> SourceConfig:
    return SourceConfig(kind="camera", trigger=TriggerConfig(fps=60, **trigger))


def take(iterator, n: int) -> list:
    return [next(iterator) for _ in range(n)]


def test_change_trigger_bursts_only_when_the_scene_changes():
    empty = np.full((240, 320, 3), 128, np.uint8)
    glass = rgb("glass")
    camera = FakeCamera([empty, empty, empty, glass, glass, glass, glass, glass, glass])
    source = CameraSource(camera_config(mode="change"), burst=3, camera=camera)
    out = take(source.frames(threading.Event()), 8)
    assert out[:3] == [None, None, None]  # the empty bin: nothing to classify
    assert [f.item for f in out[3:6]] == [1, 1, 1]  # a burst of 3 for the new item
    assert out[6:] == [None, None]  # the item is still there: not a new change
    source.close()
    assert camera.closed


def test_continuous_trigger_yields_every_frame_at_the_rate():
    camera = FakeCamera([rgb("glass")])
    source = CameraSource(camera_config(mode="continuous"), burst=3, camera=camera)
    frames = take(source.frames(threading.Event()), 4)
    assert all(f is not None and f.item == 0 for f in frames)
    assert frames[0].array.ndim == 3


def test_button_trigger_uses_a_gpio_pin(pins):
    camera = FakeCamera([rgb("metal")])
    source = CameraSource(
        camera_config(mode="button", button_pin=17), burst=2, camera=camera, pin_factory=pins
    )
    frames = source.frames(threading.Event())
    button = pins.pin(17)
    button.drive_low()  # pressed (pull-up)
    button.drive_high()
    burst = take(frames, 2)
    assert [f.item for f in burst] == [1, 1]
    source.close()


def test_trigger_difference_is_measured_on_a_thumbnail():
    trigger = Trigger(TriggerConfig(mode="change", change_threshold=0.05), burst=1)
    grey = np.full((48, 64, 3), 100, np.uint8)
    assert not trigger.changed(grey)  # the first frame is the reference
    assert not trigger.changed(grey + 5)  # 2% brighter: noise
    assert trigger.changed(np.full((48, 64, 3), 200, np.uint8))


def test_folder_source_once_and_watch(tmp_path):
    for name in ("a.jpg", "b.png", "notes.txt"):
        (tmp_path / name).write_bytes(sample_bytes("glass"))
    once = list(FolderSource(tmp_path, watch=False).frames(threading.Event()))
    assert [f.name for f in once] == ["a.jpg", "b.png"]

    stop = threading.Event()
    watched = FolderSource(tmp_path, watch=True, poll_s=0.01).frames(stop)
    first = [f.name for f in take(watched, 3) if f is not None]
    assert first == ["a.jpg", "b.png"]
    (tmp_path / "c.jpg").write_bytes(sample_bytes("metal"))
    later = [f for f in take(watched, 4) if f is not None]
    assert [f.name for f in later] == ["c.jpg"]  # once its size was stable for a poll
    stop.set()


def test_sources_from_the_command_line(tmp_path):
    assert parse_source(f"folder:{SAMPLES}").path == SAMPLES
    assert parse_source("camera:1").camera_index == 1
    with pytest.raises(ValueError, match="expected folder:DIR"):
        parse_source("ftp:x")
    with pytest.raises(SourceError, match="does not exist"):
        FolderSource(tmp_path / "nope")


def test_flush_ends_an_undecided_item_as_uncertain():
    debouncer = Debouncer(k=3)
    assert debouncer.flush("v1") is None  # nothing seen
    feed(debouncer, [("glass", 0.9), ("glass", 0.6)])
    decision = debouncer.flush("v1")
    assert decision.label == "uncertain"
    assert decision.frames == 2
    assert decision.confidence == 0.9
    assert debouncer.flush("v1") is None  # and it is over


def test_camera_backends_through_their_optional_modules(monkeypatch):
    """picamera2 and OpenCV are optional extras not installed here: stand-ins with their
    APIs check the wiring (auto order, colour order, a camera that will not open)."""
    import sys
    import types

    from edge.sources import open_camera

    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 0] = 255  # blue in BGR order

    class Capture:
        opened = True

        def __init__(self, index):
            self.index = index

        def isOpened(self):  # noqa: N802 - OpenCV's name
            return Capture.opened

        def set(self, *_):
            return True

        def read(self):
            return True, bgr

        def release(self):
            pass

    cv2 = types.SimpleNamespace(
        VideoCapture=Capture,
        CAP_PROP_FRAME_WIDTH=3,
        CAP_PROP_FRAME_HEIGHT=4,
        COLOR_BGR2RGB=4,
        cvtColor=lambda frame, _code: frame[..., ::-1],
    )
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails: auto falls back
    camera = open_camera(SourceConfig(kind="camera"))
    assert camera.capture()[0, 0].tolist() == [0, 0, 255]  # RGB: blue is last
    Capture.opened = False
    with pytest.raises(SourceError, match="cannot open camera 0"):
        open_camera(SourceConfig(kind="camera", camera="opencv"))

    class Picamera2:
        def create_still_configuration(self, main):
            return main

        def configure(self, config):
            self.size = config["size"]

        def start(self):
            pass

        def capture_array(self):
            return bgr

        def stop(self):
            pass

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=Picamera2))
    camera = open_camera(SourceConfig(kind="camera", width=320, height=240))
    assert camera._cam.size == (320, 240)
    assert camera.capture()[0, 0].tolist() == [0, 0, 255]
    camera.close()
