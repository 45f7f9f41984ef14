"""What happens when an item is decided: light an LED, turn a servo flap, log, publish.

Each actuator is a tiny class with `act(decision)` and `close()`, chosen by config. A failing
actuator is logged and reported by the runner; it never stops classification.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
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

log = logging.getLogger(__name__)


class ActuatorError(Exception):
    """An actuator cannot be set up (a missing optional extra, a bad pin)."""


class Actuator(Protocol):
    name: str

    def act(self, decision: Decision, context: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


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
        self.servo = Servo(pin, initial_value=positions["uncertain"], pin_factory=pin_factory)

    def act(self, decision: Decision, context: dict[str, Any]) -> None:
        self.servo.value = self.positions.get(decision.label, self.positions["uncertain"])

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

    def act(self, decision: Decision, context: dict[str, Any]) -> None:
        response = self.client.post(self.url, json=decision_record(decision, context))
        response.raise_for_status()

    def close(self) -> None:
        self.client.close()


def build_actuators(
    configs: Sequence[ActuatorConfig],
    *,
    device_id: str,
    pin_factory: Any = None,
    console: bool | None = None,
) -> list[Actuator]:
    """The configured actuators; `console` forces JSON lines on stdout on or off."""
    actuators: list[Actuator] = []
    for config in configs:
        if isinstance(config, LogActuatorConfig):
            actuators.append(LogActuator(config.console if console is None else console))
        elif isinstance(config, LedActuatorConfig):
            actuators.append(LedActuator(config.pins, pin_factory=pin_factory))
        elif isinstance(config, ServoActuatorConfig):
            actuators.append(ServoActuator(config.pin, config.positions, pin_factory=pin_factory))
        elif isinstance(config, MqttActuatorConfig):
            actuators.append(MqttActuator(config, device_id))
        elif isinstance(config, WebhookActuatorConfig):
            actuators.append(WebhookActuator(config))
    if console and not any(isinstance(a, LogActuator) for a in actuators):
        actuators.append(LogActuator(console=True))
    return actuators
