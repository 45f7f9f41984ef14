"""The runner's configuration: one pydantic model read from YAML, overridable by environment.

A device's fleet-wide settings live in `edge.yaml`; per-device values (the device id, a
registry URI) can come from the environment as `WASTESORT_EDGE_<FIELD>` with `__` between
nested names (`WASTESORT_EDGE_MODEL__ALIAS=canary`), which is what a systemd
`EnvironmentFile` provides; command-line flags win over both. Anything invalid is refused at
start with one readable message.
"""

from __future__ import annotations

import os
import re
import socket
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from wastesort.capture import DEFAULT_SAMPLE
from wastesort.capture import SOURCE_PATTERN as CAPTURE_SOURCE
from wastesort.scoring import UNCERTAIN
from wastesort.validation import explain

ENV_PREFIX = "WASTESORT_EDGE_"
_file_values: ContextVar[dict[str, Any]] = ContextVar("edge_config_file")


class ConfigError(Exception):
    """The configuration cannot be used; the message says which field and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Section):
    registry: str | None = None
    """A local registry folder, `s3://bucket/prefix` or `https://host/prefix` (where
    `manifest.json` is published); None means the bundled registry."""
    alias: str = "production"
    public_key: Path | None = None
    """The fleet's ed25519 public key (PEM). When set, every model must be signed by it."""
    delegate: Literal["cpu", "edgetpu"] = "cpu"
    num_threads: int | None = Field(default=None, ge=1, le=16)
    poll_interval_s: float = Field(default=300.0, gt=0)
    poll_jitter: float = Field(default=0.2, ge=0, lt=1)
    """Each wait is `poll_interval_s * (1 ± poll_jitter)`, so a fleet does not poll in step."""
    self_test: bool = True
    """Replay the version's golden set before switching to it."""
    golden_tolerance: float = Field(default=0.1, ge=0, le=1)
    """How far a golden image's scores may drift from the published ones. Runtimes round
    int8 differently: tflite-runtime 2.14 vs ai-edge-litert 2.3 moved scores by up to 0.08
    on unsure images of the Lite0 model, 0.0015 on its golden set (docs/edge.md). The
    expected class must match unless the published score was below the uncertain threshold."""
    rollback_after_errors: int = Field(default=3, ge=1)
    """Consecutive frames a new model may fail on before the runner goes back to the last
    known good one."""
    install_retry_s: float = Field(default=5.0, gt=0)
    install_retry_max_s: float = Field(default=300.0, gt=0)
    """With no model to serve (a new device offline, a full disk), the first install is tried
    again after `install_retry_s`, doubling (with jitter) up to `install_retry_max_s`."""


class TriggerConfig(_Section):
    mode: Literal["continuous", "change", "button"] = "continuous"
    fps: float = Field(default=2.0, gt=0, le=60)
    change_threshold: float = Field(default=0.06, gt=0, le=1)
    """Mean absolute difference (0..1) of a small grey thumbnail against the last frame that
    triggered, above which a frame counts as a change."""
    button_pin: int | str | None = None
    burst: int | None = Field(default=None, ge=1)
    """Frames captured per trigger for `change` and `button` (default: the decision window)."""

    @model_validator(mode="after")
    def _button_needs_pin(self) -> TriggerConfig:
        if self.mode == "button" and self.button_pin is None:
            raise ValueError("trigger mode 'button' needs button_pin (a GPIO number or name)")
        return self


class SourceConfig(_Section):
    kind: Literal["camera", "folder", "image"] = "camera"
    path: Path | None = None
    """The folder to watch (`folder`) or the image file (`image`)."""
    watch: bool = True
    """`folder`: keep waiting for new files; False (or `--once`) stops when all are done."""
    poll_s: float = Field(default=0.5, gt=0)
    camera: Literal["auto", "picamera2", "opencv"] = "auto"
    camera_index: int = 0
    width: int = Field(default=640, gt=0)
    height: int = Field(default=480, gt=0)
    trigger: TriggerConfig = Field(default_factory=TriggerConfig)

    @model_validator(mode="after")
    def _path_for_files(self) -> SourceConfig:
        if self.kind in ("folder", "image") and self.path is None:
            raise ValueError(f"source kind {self.kind!r} needs a path")
        return self


class DecideConfig(_Section):
    k: int = Field(default=3, ge=1, le=100)
    """Consecutive frames that must agree on a class."""
    window: int | None = Field(default=None, ge=1)
    """Frames after which an item without K agreeing frames is `uncertain` (default 2K-1)."""
    threshold: float | None = Field(default=None, ge=0, le=1)
    """Confidence a frame needs to count; None means the model's recorded threshold."""

    @model_validator(mode="after")
    def _window_fits(self) -> DecideConfig:
        if self.window is not None and self.window < self.k:
            raise ValueError(f"window ({self.window}) must be at least k ({self.k})")
        return self

    @property
    def frames(self) -> int:
        return self.window or 2 * self.k - 1


class LogActuatorConfig(_Section):
    type: Literal["log"] = "log"
    console: bool = False
    """Print one JSON line per decision on stdout (what `--once` uses)."""


class LedActuatorConfig(_Section):
    type: Literal["led"] = "led"
    pins: dict[str, int | str]
    """Class (or `uncertain`) -> GPIO pin of the LED that lights for it."""


class ServoActuatorConfig(_Section):
    type: Literal["servo"] = "servo"
    pin: int | str
    positions: dict[str, float]
    """Class -> servo value in -1..1; `uncertain` (the safe bin) is required."""

    @model_validator(mode="after")
    def _positions(self) -> ServoActuatorConfig:
        if UNCERTAIN not in self.positions:
            raise ValueError("servo positions need an 'uncertain' entry (the safe default bin)")
        if any(not -1 <= v <= 1 for v in self.positions.values()):
            raise ValueError("servo positions are values between -1 and 1")
        return self


class MqttActuatorConfig(_Section):
    type: Literal["mqtt"] = "mqtt"
    host: str
    port: int = 1883
    topic: str = "wastesort/{device_id}/decision"
    qos: Literal[0, 1, 2] = 1


class WebhookActuatorConfig(_Section):
    type: Literal["webhook"] = "webhook"
    url: str
    timeout_s: float = Field(default=2.0, gt=0)


ActuatorConfig = Annotated[
    LogActuatorConfig
    | LedActuatorConfig
    | ServoActuatorConfig
    | MqttActuatorConfig
    | WebhookActuatorConfig,
    Field(discriminator="type"),
]


class TelemetryConfig(_Section):
    enabled: bool = True
    upload_to: str | None = None
    """`s3://bucket/prefix` or an `https://` endpoint that accepts JSON-lines batches;
    None keeps everything in the local queue."""
    batch_size: int = Field(default=500, ge=1, le=10_000)
    upload_interval_s: float = Field(default=60.0, gt=0)
    backoff_base_s: float = Field(default=2.0, gt=0)
    backoff_max_s: float = Field(default=900.0, gt=0)
    max_events: int = Field(default=200_000, ge=10)
    """The queue's bound; the oldest events beyond it are evicted, counted and reported."""
    durability: Literal["normal", "full"] = "normal"
    """SQLite `synchronous`: `normal` survives a crash or kill -9; `full` also a power cut,
    at one fsync per decision."""


class CaptureConfig(_Section):
    """Keep photos worth learning from (docs/edge.md, "Capture"): off unless enabled."""

    enabled: bool = False
    sample: float = Field(default=DEFAULT_SAMPLE, ge=0, le=1)
    """The fraction of decided items kept; every `uncertain` one is kept."""
    upload_to: str | None = None
    """The capture store: `s3://<capture bucket>` (objects go to `captures/<device id>/...`,
    which is what the device role may write) or an `https://` endpoint; None keeps the
    captures in the local queue."""
    max_captures: int = Field(default=1000, ge=1)
    """The queue's bound for captures (about 100 KB each); the oldest beyond it are evicted,
    counted and reported, like events."""


class RecordsConfig(_Section):
    """Prediction records for drift reports (docs/edge.md, "Records"): all confidences, the
    projected embedding and image statistics of a decision's frame; no photo."""

    enabled: bool = True
    sample: float = Field(default=1.0, ge=0, le=1)
    """The share of decisions recorded (their deciding frame)."""
    upload_to: str | None = None
    """The record store: `s3://<capture bucket>` (objects go to `records/<device id>/...`) or
    an `https://` endpoint; None: `capture.upload_to`, and with neither they stay on the bin."""
    max_pending: int = Field(default=20_000, ge=10)
    """Records waiting for upload at most (about 1 KB each); the oldest beyond are evicted."""
    keep: int = Field(default=500, ge=0)
    """Uploaded records kept in the queue file for the heartbeat's drift verdict and
    `wastesort drift --current <state>/telemetry.sqlite`."""
    drift_window: int = Field(default=200, ge=2)
    """The heartbeat's drift verdict judges the serving version's last this many records."""
    drift_every: int = Field(default=20, ge=1)
    """... recomputed on a heartbeat once this many new records came (off the frame loop)."""
    drift_permutations: int = Field(default=200, ge=10)
    """Permutations of the embedding test: fewer than the CLI's, for a Pi's CPU."""


class HealthConfig(_Section):
    interval_s: float = Field(default=60.0, gt=0)


class EdgeConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid"
    )

    device_id: str = Field(default_factory=socket.gethostname, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    state_dir: Path = Path("/var/lib/wastesort-edge")
    model: ModelConfig = Field(default_factory=ModelConfig)
    source: SourceConfig = Field(default_factory=SourceConfig)
    decide: DecideConfig = Field(default_factory=DecideConfig)
    actuators: list[ActuatorConfig] = Field(default_factory=lambda: [LogActuatorConfig()])
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    records: RecordsConfig = Field(default_factory=RecordsConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _capture_needs_the_queue(self) -> EdgeConfig:
        if self.capture.enabled and not self.telemetry.enabled:
            raise ValueError("capture needs telemetry enabled (captures join its queue)")
        if self.capture.enabled and not re.fullmatch(CAPTURE_SOURCE, self.device_id):
            raise ValueError(
                f"capture names captures by the device id: {self.device_id!r} must match "
                f"{CAPTURE_SOURCE} (no dots)"
            )
        uploads = self.records.upload_to or self.capture.upload_to
        if self.records.enabled and uploads and not re.fullmatch(CAPTURE_SOURCE, self.device_id):
            raise ValueError(
                f"records are uploaded under the device id: {self.device_id!r} must match "
                f"{CAPTURE_SOURCE} (no dots)"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Command-line flags win over the environment (per device), which wins over the
        # YAML file (per fleet); `load_config` hands the file's values over in `_file_values`.
        return init_settings, env_settings, InitSettingsSource(settings_cls, _file_values.get({}))


def load_config(path: str | Path | None = None, **overrides: Any) -> EdgeConfig:
    """Read `path` (YAML), apply `overrides` (nested dicts, from the command line), validate.

    Raises:
        ConfigError: the file is missing, not YAML, or a field is invalid.
    """
    data: dict[str, Any] = {}
    if path is not None:
        import yaml  # noqa: PLC0415

        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of settings at the top level")
        data = loaded or {}
    token = _file_values.set(data)
    try:
        return EdgeConfig(**_without_none(overrides))
    except ValidationError as exc:
        origin = f"{path}" if path else "the settings"
        raise ConfigError(explain(exc, heading=f"{origin} is invalid")) from None
    finally:
        _file_values.reset(token)


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {
        key: _without_none(value) if isinstance(value, dict) else value
        for key, value in values.items()
        if value is not None
    }


def env_overrides_present() -> list[str]:
    """Names of the WASTESORT_EDGE_* variables in effect (logged at start)."""
    return sorted(name for name in os.environ if name.upper().startswith(ENV_PREFIX))
