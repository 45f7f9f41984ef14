"""Actuators are chosen by their config's `type` through one registry (`KINDS`): every kind the
config accepts has a class, the wiring (pins, device id, `--json`) reaches each one, and a new
kind is one class plus one entry."""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from typing import Any

import pytest

from edge.actuators import (
    KINDS,
    ActuatorError,
    LedActuator,
    LogActuator,
    ServoActuator,
    Wiring,
    build_actuators,
)
from edge.config import (
    ActuatorConfig,
    LedActuatorConfig,
    LogActuatorConfig,
    ServoActuatorConfig,
    load_config,
)
from edge.decide import Decision

GLASS = Decision("glass", 0.9, 3, "v1", {"glass": 0.9, "paper": 0.1})


def config_models() -> list[type]:
    union = typing.get_args(ActuatorConfig)[0]  # Annotated[Union[...], Field(...)]
    return list(typing.get_args(union))


def test_every_configurable_kind_has_an_actuator_and_nothing_else_does():
    kinds = {model.model_fields["type"].default for model in config_models()}
    assert kinds == set(KINDS)
    for kind, cls in KINDS.items():
        assert cls.name == kind  # what the runner logs a failing actuator as
        assert callable(cls.from_config)


def test_gpio_actuators_are_built_from_their_config_on_the_given_pins(pins):
    configs = [
        LedActuatorConfig(pins={"glass": 17, "paper": 27}),
        ServoActuatorConfig(pin=18, positions={"glass": 0.5, "uncertain": -1.0}),
    ]
    led, servo = build_actuators(configs, device_id="bin-1", pin_factory=pins)
    assert isinstance(led, LedActuator) and isinstance(servo, ServoActuator)
    assert servo.servo.value == -1.0  # starts at the safe bin
    led.act(GLASS, {})
    servo.act(GLASS, {})
    assert led.leds["glass"].is_lit and not led.leds["paper"].is_lit
    assert servo.servo.value == 0.5
    servo.act(Decision("metal", 0.8, 3, "v1", {}), {})  # no position for it: the safe bin
    assert servo.servo.value == -1.0
    for actuator in (led, servo):
        actuator.close()


@pytest.mark.parametrize(
    ("configured", "flag", "printed"),
    [(False, None, False), (True, None, True), (True, False, False), (False, True, True)],
)
def test_the_json_flag_overrides_the_log_actuators_console(capsys, configured, flag, printed):
    (actuator,) = build_actuators(
        [LogActuatorConfig(console=configured)], device_id="bin-1", console=flag
    )
    actuator.act(GLASS, {"device_id": "bin-1", "source": "a.jpg"})
    out = capsys.readouterr().out
    assert bool(out) is printed
    if printed:
        assert json.loads(out)["decision"] == "glass"


def test_the_json_flag_adds_a_console_when_none_is_configured():
    actuators = build_actuators([], device_id="bin-1", console=True)
    assert [type(a) for a in actuators] == [LogActuator]
    assert build_actuators([], device_id="bin-1", console=None) == []


def test_a_new_kind_is_one_class_and_one_entry(monkeypatch):
    @dataclass
    class BuzzerConfig:
        type: str = "buzzer"
        beeps: int = 2

    class Buzzer:
        name = "buzzer"

        def __init__(self, beeps: int, device_id: str) -> None:
            self.beeps, self.device_id, self.heard = beeps, device_id, []

        @classmethod
        def from_config(cls, config: BuzzerConfig, wiring: Wiring) -> Buzzer:
            return cls(config.beeps, wiring.device_id)

        def act(self, decision: Decision, context: dict[str, Any]) -> None:
            self.heard.append(decision.label)

        def close(self) -> None:
            pass

    monkeypatch.setitem(KINDS, "buzzer", Buzzer)
    (buzzer,) = build_actuators([BuzzerConfig()], device_id="bin-7")  # type: ignore[list-item]
    buzzer.act(GLASS, {})
    assert (buzzer.beeps, buzzer.device_id, buzzer.heard) == (2, "bin-7", ["glass"])


def test_a_kind_without_an_entry_is_a_clear_error(monkeypatch):
    monkeypatch.delitem(KINDS, "log")
    with pytest.raises(ActuatorError, match="'log' has no implementation"):
        build_actuators([LogActuatorConfig()], device_id="bin-1")


def test_actuators_from_yaml(tmp_path, pins):
    path = tmp_path / "edge.yaml"
    path.write_text(
        "actuators:\n  - type: log\n  - type: led\n    pins: {glass: 5}\n"
        "  - type: servo\n    pin: 6\n    positions: {uncertain: 0}\n"
    )
    config = load_config(path)
    actuators = build_actuators(config.actuators, device_id="bin-1", pin_factory=pins)
    assert [a.name for a in actuators] == ["log", "led", "servo"]
    for actuator in actuators:
        actuator.close()
