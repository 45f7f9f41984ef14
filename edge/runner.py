"""The loop at the bin: frame -> decode -> preprocess -> invoke -> decide -> record -> act.

Model updates, telemetry uploads and heartbeats run on their own threads; the loop only
swaps in a ready model between two frames. SIGTERM lets the frame in hand finish, then
telemetry is flushed and systemd is told we are stopping.
"""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import threading
import time
import uuid
from typing import Any

import numpy as np
from PIL import Image

from edge.actuators import Actuator
from edge.capture import EdgeCapture, QueuedCapture
from edge.config import EdgeConfig
from edge.decide import Debouncer, Decision
from edge.decided import DecidedFiles, event_id
from edge.first_model import FirstModel, start_model
from edge.health import Health
from edge.records import EdgeRecords
from edge.sources import Frame, Source
from edge.stats import Stats
from edge.systemd import Watchdog
from edge.telemetry import Sink, TelemetryQueue, Uploader, telemetry_status
from edge.updater import Updater, describe
from wastesort.classifier import Classifier, Prediction
from wastesort.errors import ImageError

log = logging.getLogger(__name__)


class Runner:
    def __init__(
        self,
        config: EdgeConfig,
        *,
        source: Source,
        updater: Updater,
        actuators: list[Actuator],
        queue: TelemetryQueue | None,
        uploader: Uploader | None,
        once: bool = False,
        watchdog: Watchdog | None = None,
        per_file: bool = False,
        telemetry_error: str | None = None,
        sink: Sink | None = None,
        decided: DecidedFiles | None = None,
        capture: EdgeCapture | None = None,
        records: EdgeRecords | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.updater = updater
        self.actuators = actuators
        self.queue = queue
        self.uploader = uploader
        self.telemetry_error = telemetry_error
        """Why the telemetry queue could not be opened (then decisions are made, not recorded)."""
        self.sink = sink if sink is not None else uploader.sink if uploader is not None else None
        """Where heartbeats go: also without a queue, so the fleet hears of a full disk."""
        self.decided = decided
        """The files decided (a watched folder skips them after a restart)."""
        self.capture = capture
        """Chooses the photos kept with their decision (`capture:`); None when off."""
        self._frame: Frame | None = None
        self.once = once
        self.watchdog = watchdog or Watchdog()
        self.stop = threading.Event()
        self.stats = Stats()
        decide = config.decide
        # A file is one item seen once: it is decided on its own frame.
        self.debouncer = (
            Debouncer(k=1, window=1, threshold=decide.threshold)
            if per_file
            else Debouncer(k=decide.k, window=decide.frames, threshold=decide.threshold)
        )
        self.health = Health(config.device_id, config.state_dir)
        updater.on_error = self.health.error
        self.classifier: Classifier | None
        """None only while a service waits for its first model (`first_model`)."""
        self.first_model: FirstModel | None
        self.classifier, self.first_model = start_model(updater, config.model, once=once)
        self._item: int | None = None
        self._decided_item: int | None = None
        self._item_source = ""
        self._item_key: str | None = None
        self.last_prediction: Prediction | None = None
        self.last_input: np.ndarray | None = None
        self._last_label: str | None = None
        self._model_failures = 0
        self._threads: list[threading.Thread] = []
        self.health.provide("model", self._model_status)
        if queue is not None or telemetry_error is not None:
            self.health.provide("telemetry", self._telemetry_status)
        self.health.provide("decisions", lambda: self.stats.decisions)
        self.records = records
        """Decisions' records for drift, and the heartbeat's verdict and uncertain share."""
        if records is not None:
            records.attach(self.health, lambda: self.classifier)
        if telemetry_error is not None:
            self._error(telemetry_error)
        if self.first_model is not None:
            self._error(self.first_model.describe())

    # --- reporting ---------------------------------------------------------------------------

    def _model_status(self) -> dict[str, Any]:
        status = self.updater.status()
        clf, waiting = self.classifier, self.first_model
        status["serving"] = clf.version if clf else None
        status["runtime"] = clf.runtime.to_dict() if clf else None
        status["accelerator"] = ("edgetpu" if clf.runtime.delegate else "cpu") if clf else None
        if clf is None and waiting is not None:
            status["first_install"] = waiting.status()
        return status

    def _telemetry_status(self) -> dict[str, Any]:
        return telemetry_status(
            self.queue, self.uploader, self.telemetry_error, self.stats.telemetry_errors
        )

    def _error(self, message: str) -> None:
        log.error("%s", message)
        self.health.error(message)

    # --- one frame ---------------------------------------------------------------------------

    def _swap(self, classifier: Classifier, why: str) -> None:
        previous = self.classifier.version if self.classifier else None
        self.classifier = classifier
        self.debouncer.reset()
        self._model_failures = 0
        log.info(
            "now serving %s (was %s; %s) on %s",
            classifier.version,
            previous,
            why,
            describe(classifier),
        )

    def process(self, frame: Frame) -> Decision | None:
        """Classify one frame; returns the decision when this frame completes an item."""
        clf = self.classifier
        assert clf is not None, "no model to serve yet"
        seconds = self.stats.seconds
        if frame.item != self._item:
            self.end_item()
            self._item, self._item_source, self._item_key = frame.item, frame.name, frame.key
        elif frame.item and self._decided_item == frame.item:
            return None  # the rest of a burst whose item is already decided
        self._frame = frame  # the photo a capture of this item keeps
        t0 = time.perf_counter()
        if frame.data is not None:
            image = clf.decode(frame.data)
        else:
            image = Image.fromarray(np.ascontiguousarray(frame.array, dtype=np.uint8))
        t1 = time.perf_counter()
        array = clf.to_array(image)
        t2 = time.perf_counter()
        prediction = clf.predict_arrays(array)[0]
        t3 = time.perf_counter()
        decision = self.debouncer.update(prediction, clf.entry.uncertain_threshold)
        t4 = time.perf_counter()
        seconds["decode"] += t1 - t0
        seconds["preprocess"] += t2 - t1
        seconds["invoke"] += t3 - t2
        seconds["decide"] += t4 - t3
        self.stats.frames += 1
        self.last_prediction, self.last_input = prediction, array
        if decision is None:
            return None
        if frame.item == 0 and decision.label == self._last_label:
            return None  # continuous mode: the same thing still there is not a new item
        self._decided_item = frame.item
        self._conclude(decision, frame.name, t4 - t0, frame.key)
        return decision

    def end_item(self) -> Decision | None:
        """The source says the item's frames are over (an idle tick, the next item): if its
        burst ended without K agreeing frames, it is `uncertain` — the safe default bin."""
        if not self._item or self.classifier is None:
            return None  # continuous mode: the stream has no items to end
        unfinished = self.debouncer.flush(self.classifier.version)
        if unfinished is not None:
            self._conclude(unfinished, self._item_source, 0.0, self._item_key)
        return unfinished

    def _conclude(
        self, decision: Decision, source: str, seconds_taken: float, key: str | None = None
    ) -> None:
        """Record the decision (committed before anything moves), then act on it."""
        self._last_label = decision.label
        self.stats.decisions += 1
        context = {
            "device_id": self.config.device_id,
            "source": source,
            "latency_ms": round(seconds_taken * 1000, 3),
        }
        t4 = time.perf_counter()
        if self._record(decision, context, key) and key and self.decided is not None:
            try:  # after the event: a kill between re-sends it, under the same id
                self.decided.add(key)
            except (sqlite3.Error, OSError) as exc:
                self._error(f"{source}: not remembered as decided: {type(exc).__name__}: {exc}")
        if self.records is not None:
            self.records.observe(decision, self.last_prediction)
        t5 = time.perf_counter()
        self.stats.seconds["telemetry"] += t5 - t4
        for actuator in self.actuators:
            try:
                actuator.act(decision, context)
            except Exception as exc:  # an actuator failing must not stop the bin
                self._error(f"actuator {actuator.name} failed: {type(exc).__name__}: {exc}")
        self.stats.seconds["act"] += time.perf_counter() - t5

    def _record(self, decision: Decision, context: dict[str, Any], key: str | None) -> bool:
        """The telemetry event; False when it could not be recorded (then the file is not
        remembered either: after a restart it is decided, and recorded, again)."""
        if self.queue is None:
            if self.telemetry_error is None:
                return True  # telemetry is off
            self.stats.telemetry_errors += 1  # counted in the heartbeat; logged once at start
            return False
        clf = self.classifier
        assert clf is not None
        event = decision.event(
            source=context["source"],
            latency_ms=context["latency_ms"],
            accelerator="edgetpu" if clf.runtime.delegate else "cpu",
        )
        same_id = event_id(self.config.device_id, key, decision.model_version) if key else None
        same_id = same_id or uuid.uuid4().hex
        try:
            self.queue.record(event, event_id=same_id, capture=self._capture(decision, same_id))
        except (sqlite3.Error, OSError) as exc:  # a full disk must not stop the sorting
            self.stats.telemetry_errors += 1
            self._error(f"telemetry not recorded: {type(exc).__name__}: {exc}")
            return False
        return True

    def _capture(self, decision: Decision, same_id: str) -> QueuedCapture | None:
        """The decision's capture, if kept; a photo that cannot be kept never costs a decision."""
        if self.capture is None or self._frame is None:
            return None
        try:
            return self.capture.take(decision, self._frame, same_id)
        except Exception as exc:
            self._error(f"{self._frame.name}: not captured: {type(exc).__name__}: {exc}")
            return None

    def handle(self, frame: Frame) -> None:
        """Process a frame as the loop does: a bad image is counted, a model failing on
        `rollback_after_errors` frames in a row is rolled back."""
        try:
            self.process(frame)
            self._model_failures = 0
        except ImageError as exc:
            self.stats.bad_frames += 1
            self._error(f"{frame.name}: {exc}")
        except Exception as exc:
            self._model_failures += 1
            self._error(
                f"model {getattr(self.classifier, 'version', None)} failed on {frame.name}: "
                f"{type(exc).__name__}: {exc}"
            )
            if self._model_failures >= self.config.model.rollback_after_errors:
                restored = self.updater.rollback(f"{self._model_failures} frames failed: {exc}")
                if restored is not None:
                    self._swap(restored, "rollback")

    # --- the loop ----------------------------------------------------------------------------

    def _background(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, args=(self.stop,), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _heartbeats(self, stop: threading.Event) -> None:
        while not stop.wait(self.config.health.interval_s):
            self.try_beat()

    def beat(self) -> dict[str, Any]:
        return self.health.beat(self.sink.put_heartbeat if self.sink is not None else None)

    def try_beat(self) -> None:
        """A beat that cannot fail: a full disk is logged, and the next interval tries again
        (the heartbeat thread, and the runner's start, must outlive it)."""
        try:
            self.beat()
        except Exception as exc:
            self._error(f"heartbeat not written: {type(exc).__name__}: {exc}")

    def install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: Any) -> None:
            log.info("%s: finishing the current frame, then stopping", signal.Signals(signum).name)
            self.stop.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def _await_first_model(self) -> Classifier | None:
        """Up, heard (heartbeat, STATUS) and retrying, until a model is installed or SIGTERM."""
        assert self.first_model is not None
        self.try_beat()
        self.watchdog.ready(self.first_model.describe())
        classifier = self.first_model.wait(self.stop, tick=self.watchdog.ping, report=self._error)
        if classifier is not None:
            self.classifier, self.first_model = classifier, None
            log.info("installed a first model: %s", classifier.version)
        return classifier

    def run(self) -> Stats:
        self.stats = Stats()
        try:
            if not self.once:
                if self.uploader is not None:
                    self._background("uploader", self.uploader.run)
                self._background("heartbeat", self._heartbeats)
            if self.classifier is None and self._await_first_model() is None:
                return self.stats  # stopped while waiting
            if self.once:
                pending = self.updater.check() and self.updater.take_pending()
                if pending:
                    self._swap(pending, "update")
            else:
                self._background("updater", self.updater.run)
            clf = self.classifier
            assert clf is not None
            self.try_beat()
            self.watchdog.ready(f"serving {clf.version}")
            log.info("running: model %s on %s", clf.version, describe(clf))
            for frame in self.source.frames(self.stop):
                pending = self.updater.take_pending()
                if pending is not None:
                    self._swap(pending, "update")
                if frame is not None:
                    self.handle(frame)
                else:
                    self.end_item()
                self.watchdog.ping()
                if self.stop.is_set():
                    break
        finally:
            self.stats.ended = time.perf_counter()
            self.shutdown()
        return self.stats

    def shutdown(self, flush_s: float = 10.0) -> None:
        self.watchdog.stopping()
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=flush_s)
        if self.uploader is not None:
            try:
                sent = self.uploader.flush(deadline=time.monotonic() + flush_s)
                if sent:
                    log.info("flushed %d telemetry events", sent)
            except Exception as exc:  # offline: the events stay queued for next time
                log.warning("telemetry kept for later (%s: %s)", type(exc).__name__, exc)
        self.try_beat()
        for actuator in self.actuators:
            try:
                actuator.close()
            except Exception as exc:
                log.warning("closing actuator %s: %s", actuator.name, exc)
        self.source.close()
        if self.queue is not None:
            self.queue.close()
        if self.records is not None:
            self.records.close()
        if self.decided is not None:
            self.decided.close()
        summary = self.stats.summary()
        log.info("stopped: %s", json.dumps(summary))
