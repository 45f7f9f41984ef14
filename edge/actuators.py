"""What happens when an item is decided: light an LED, turn a servo flap, log, publish.

Each actuator is a tiny class with `act(decision)` and `close()` that builds itself from its
config section (`from_config`); `KINDS` maps the section's `type` to the class. A new kind is
one class here, one entry in `KINDS` and one config model in edge/config.py. A failing
actuator is logged and reported by the runner; it never stops classification.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from edge.config import (
    ActuatorConfig,
    LedActuatorConfig,
    LogActuatorConfig,
    MqttActuatorConfig,
    ServoActuatorConfig,
    WebhookActuatorConfig,
)
from edge.decide import Decision
from wastesort.scoring import UNCERTAIN

log = logging.getLogger(__name__)


class ActuatorError(Exception):
    """An actuator cannot be set up (a missing optional extra, a bad pin)."""


class Actuator(Protocol):
    name: str

    def act(self, decision: Decision, context: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Wiring:
    """What an actuator may need beyond its own config section."""

    device_id: str
    pin_factory: Any = None
    """gpiozero's pin factory (tests pass a mock one); None means the board's."""
    console: bool | None = None
    """Forces the log actuator's JSON lines on stdout on or off (`--json`)."""


class ActuatorKind(Protocol):
    """An entry of `KINDS`: a class that builds itself from its config section."""

    def from_config(self, config: Any, wiring: Wiring) -> Actuator: ...


def decision_record(decision: Decision, context: dict[str, Any]) -> dict[str, Any]:
    """The JSON a decision is published as (console, MQTT, webhook)."""
    return {
        "device_id": context.get("device_id"),
        "source": context.get("source"),
        "decision": decision.label,
        "confidence": decision.confidence,
        "frames": decision.frames,
        "model_version": decision.model_version,
        "all_confidences": decision.scores,
        "latency_ms": context.get("latency_ms"),
    }


class LogActuator:
    name = "log"

    def __init__(self, console: bool = False) -> None:
        self.console = console

    @classmethod
    def from_config(cls, config: LogActuatorConfig, wiring: Wiring) -> LogActuator:
        return cls(config.console if wiring.console is None else wiring.console)

    def act(self, decision: Decision, context: dict[str, Any]) -> None:
        log.info(
            "%s -> %s (%.3f, %d frames, model %s)",
            context.get("source"),
            decision.label,
            decision.confidence,
            decision.frames,
            decision.model_version,
        )
        if self.console:
            sys.stdout.write(json.dumps(decision_record(decision, context)) + "\n")
            sys.stdout.flush()

    def close(self) -> None:
        pass


class LedActuator:
    """One LED per class: the decided class's LED lights, the others go dark."""

    name = "led"

    def __init__(self, pins: dict[str, int | str], *, pin_factory: Any = None) -> None:
        from gpiozero import LED  # noqa: PLC0415

        self.leds = {label: LED(pin, pin_factory=pin_factory) for label, pin in pins.items()}

    @classmethod
    def from_config(cls, config: LedActuatorConfig, wiring: Wiring) -> LedActuator:
        return cls(config.pins, pin_factory=wiring.pin_factory)

    def act(self, decision: Decision, context: dict[str, Any]) -> None:
        for label, led in self.leds.items():
            if label == decision.label:
                led.on()
            else:
                led.off()

    def close(self) -> None:
        for led in self.leds.values():
            led.close()


class ServoActuator:
    """A flap that turns to the decided class's bin; anything unknown goes to `uncertain`."""

    name = "servo"

    def __init__(
        self, pin: int | str, positions: dict[str, float], *, pin_factory: Any = None
    ) -> None:
        from gpiozero import Servo  # noqa: PLC0415

        self.positions = positions
        self.servo = Servo(pin, initial_value=positions[UNCERTAIN], pin_factory=pin_factory)

    @classmethod
    def from_config(cls, config: ServoActuatorConfig, wiring: Wiring) -> ServoActuator:
        return cls(config.pin, config.positions, pin_factory=wiring.pin_factory)

    def act(self, decision: Decision, context: dict[str, Any]) -> None:
        self.servo.value = self.positions.get(decision.label, self.positions[UNCERTAIN])

    def close(self) -> None:
        self.servo.close()


class MqttActuator:
    """Publishes each decision as JSON; needs paho-mqtt (an optional extra)."""

    name = "mqtt"

    def __init__(self, config: MqttActuatorConfig, device_id: str) -> None:
        try:
            import paho.mqtt.client as mqtt  # type: ignore[import-not-found]  # noqa: PLC0415
        except ImportError:
            raise ActuatorError(
                "the mqtt actuator needs paho-mqtt (pip install 'paho-mqtt>=2,<3')"
            ) from None
        self.topic = config.topic.format(device_id=device_id)
        self.qos = config.qos
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id)
        self.client.connect_async(config.host, config.port)
        self.client.loop_start()  # reconnects in the background; publishes queue meanwhile

    @classmethod
    def from_config(cls, config: MqttActuatorConfig, wiring: Wiring) -> MqttActuator:
        return cls(config, wiring.device_id)

    def act(self, decision: Decision, context: dict[str, Any]) -> None:
        payload = json.dumps(decision_record(decision, context))
        self.client.publish(self.topic, payload, qos=self.qos)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class WebhookActuator:
    """POSTs each decision as JSON; a short timeout so a slow server cannot stall the bin."""

    name = "webhook"

    def __init__(self, config: WebhookActuatorConfig) -> None:
        import httpx  # noqa: PLC0415

        self.url = config.url
        self.client = httpx.Client(timeout=config.timeout_s)

    @classmethod
    def from_config(cls, config: WebhookActuatorConfig, wiring: Wiring) -> WebhookActuator:
        return cls(config)

    def act(self, decision: Decision, context: dict[str, Any]) -> None:
        response = self.client.post(self.url, json=decision_record(decision, context))
        response.raise_for_status()

    def close(self) -> None:
        self.client.close()


KINDS: dict[str, ActuatorKind] = {
    "log": LogActuator,
    "led": LedActuator,
    "servo": ServoActuator,
    "mqtt": MqttActuator,
    "webhook": WebhookActuator,
}
"""Config `type` -> the class that acts on it (each config model in edge/config.py has one)."""


def build_actuators(
    configs: Sequence[ActuatorConfig],
    *,
    device_id: str,
    pin_factory: Any = None,
    console: bool | None = None,
) -> list[Actuator]:
    """The configured actuators; `console` forces JSON lines on stdout on or off.

    Raises:
        ActuatorError: an actuator cannot be set up, or its kind has no entry in `KINDS`.
    """
    wiring = Wiring(device_id=device_id, pin_factory=pin_factory, console=console)
    actuators: list[Actuator] = []
    for config in configs:
        kind = KINDS.get(config.type)
        if kind is None:
            raise ActuatorError(f"actuator type {config.type!r} has no implementation")
        actuators.append(kind.from_config(config, wiring))
    if console and not any(isinstance(a, LogActuator) for a in actuators):
        actuators.append(LogActuator(console=True))
    return actuators
