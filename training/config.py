"""The training config: one pydantic model, loaded from YAML plus `key=value` overrides.

Every knob of a run lives here, is validated before any work starts, and is logged to MLflow and
recorded in the manifest as `source_config`, so a published model says how it was made.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    ValidationError,
    field_validator,
    model_validator,
)

from training.overrides import ConfigError, StrictLoader, apply_override, parse_override
from training.source_config import DataConfig, SourceConfig  # noqa: F401 (re-exported)
from wastesort.errors import WastesortError
from wastesort.manifest import check_alias
from wastesort.validation import explain


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class InputConfig(_Section):
    height: int = Field(224, ge=32, le=1024)
    width: int = Field(224, ge=32, le=1024)
    resize: Literal["squash", "center_crop", "letterbox"] = "squash"
    resample: Literal["bilinear", "bicubic", "nearest"] = "bilinear"


class ModelConfig(_Section):
    backbone: Literal[
        "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2"
    ] = "efficientnet_lite0"
    weights: str | None = "pretrained"
    """`pretrained`: the Lite model's official ImageNet weights from its bundled `.pth` (offline);
    `imagenet`: Keras' download (Keras backbones, needs internet); a path to a Keras
    `.weights.h5`; null: from scratch."""
    alpha: float = Field(1.0, gt=0, le=1.4)
    """MobileNetV2 width multiplier."""
    dropout: float = Field(0.2, ge=0, lt=1)
    bn_momentum: float = Field(0.9, gt=0, lt=1)
    """Only for BatchNorm layers that train (from scratch); Keras' 0.999 stalls small runs."""
    stochastic_depth: float = Field(0.0, ge=0, lt=1)
    """Lite backbones: in every training step, skip each residual branch for an image at a rate
    rising linearly from 0 at the first block to this at the end; 0 turns it off. With
    `fine_tune_on: pixels` the frozen blocks drop too; cached activations are computed without."""
    tta_flip: bool = False
    """Average the logits of the image and its mirror image inside the graph."""

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: str | None) -> str | None:
        if value in (None, "pretrained", "imagenet"):
            return value
        if not value.endswith(".weights.h5") or not Path(value).is_file():
            raise ValueError("expected pretrained, imagenet, null or an existing .weights.h5 file")
        return value


class AugmentConfig(_Section):
    views: int = Field(4, ge=1, le=32)
    """Augmented views of each training image whose backbone features are cached (head phase)."""
    flip_horizontal: bool = True
    flip_vertical: bool = True
    rotation: float = Field(0.05, ge=0, le=0.5)
    """Max rotation as a fraction of a full turn."""
    zoom: float = Field(0.1, ge=0, lt=1)
    translation: float = Field(0.05, ge=0, lt=1)
    brightness: float = Field(0.1, ge=0, lt=1)
    contrast: float = Field(0.1, ge=0, lt=1)
    white_balance: float = Field(0.0, ge=0, lt=1)
    """Max per-channel gain change (colour of the light); 0 turns it off."""
    blur: float = Field(0.0, ge=0, le=8)
    """Gaussian blur sigma in pixels that each image is blended towards by its own share (a
    camera out of focus or shaken); 0 turns it off."""
    noise: float = Field(0.0, ge=0, le=64)
    """Max standard deviation of Gaussian sensor noise, in pixel values; 0 turns it off."""
    jpeg_quality: int = Field(100, ge=5, le=100)
    """Lowest JPEG quality each image is re-encoded at (drawn up to 100); 100 turns it off."""

    def cache_dump(self) -> dict:
        """The fields that shape the cached views; the camera steps only when on, so caches
        made before they existed stay valid."""
        fields = type(self).model_fields
        camera = ("blur", "noise", "jpeg_quality")  # off at their defaults
        return {
            k: v for k, v in self.model_dump().items() if k not in camera or v != fields[k].default
        }


class PhaseConfig(_Section):
    epochs: int = Field(30, ge=0)
    learning_rate: float = Field(1e-3, gt=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["constant", "cosine"] = "cosine"
    patience: int = Field(8, ge=1)
    """Early stopping on validation macro-F1; the best epoch's weights are restored."""


class TrainConfig(_Section):
    seed: int = 42
    batch_size: int = Field(32, ge=1, le=1024)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    class_weights: Literal["none", "balanced", "sqrt"] = "sqrt"
    mixup: float = Field(0.0, ge=0, le=10)
    """Mixup on the cached activations: Beta(mixup, mixup) blends pairs of training inputs and
    their labels (0 = off)."""
    feature_noise: float = Field(0.0, ge=0, le=1)
    """Gaussian noise added to the cached activations while training, as a fraction of their
    RMS, to mimic the int8 model's activation error (0 = off; on TrashNet it left int8/float
    agreement unchanged, see docs/experiments.md)."""
    head: PhaseConfig = Field(default_factory=PhaseConfig)
    fine_tune: PhaseConfig = Field(
        default_factory=lambda: PhaseConfig(epochs=0, learning_rate=2e-4, patience=3)
    )
    fine_tune_blocks: int = Field(1, ge=0, le=21)
    """Top backbone blocks (of 16 in Lite0, 21 in Lite1/2, plus the 1x1 head conv) trained in
    the fine-tune phase; BatchNorm stays frozen."""
    fine_tune_tolerance: float = Field(0.02, ge=0, le=1)
    """The fine-tuned weights replace the head phase's unless their best validation macro-F1 is
    more than this below the head's. The head's best is the highest of up to 40 noisy epochs
    (0.866-0.890 over its last ten on one TrashNet split), and fine-tunes 0.003 and 0.010 below
    it scored better on the test photos than the head (docs/experiments.md, round 14).
    0 keeps only a fine-tune that beats the head; 1 always keeps it."""
    fine_tune_on: Literal["cached", "pixels"] = "cached"
    """`cached`: the top blocks train on the frozen trunk's cached output for the augmented
    views (an epoch takes seconds); `pixels`: the network sees freshly augmented images every
    epoch, the frozen trunk included in every step (all 16 blocks: about 2 minutes an epoch on
    2 CPU cores, against seconds)."""
    quantization_aware: bool = False
    """Fine-tune through simulated int8 rounding (`training/fake_quant.py`), so the int8 model
    follows the weights that moved (a third more time per pixel epoch, twice per cached one;
    on TrashNet no gain, see docs/experiments.md)."""


class GateConfig(_Section):
    max_accuracy_drop: float = Field(0.01, ge=0, le=1)
    """int8 accuracy may be at most this far below the float model's (0.01 = 1 point)."""
    min_agreement: float = Field(0.98, ge=0, le=1)
    """Share of test images where int8 and float predict the same class."""


class QuantizeConfig(_Section):
    modes: tuple[Literal["float32", "float16", "dynamic", "int8"], ...] = (
        "float32",
        "float16",
        "dynamic",
        "int8",
    )
    representative_images: int = Field(300, ge=1)
    int8_output: Literal["float32", "int8", "uint8"] = "float32"
    kernel_rounding: Literal["nearest", "gptq"] = "nearest"
    """How the int8 model's kernels are rounded: `nearest` is the converter's own; `gptq`
    rounds them from calibration photos so each conv's output moves less (`rounding.py`;
    +0.5 points of agreement with the float model, about 2 min more at 256x192)."""
    gate: GateConfig = Field(default_factory=GateConfig)
    edgetpu: bool = True
    """Compile `*_edgetpu.tflite` when `edgetpu_compiler` is on PATH (else say it was skipped)."""

    @model_validator(mode="after")
    def _int8_required(self) -> QuantizeConfig:
        if "int8" not in self.modes:
            raise ValueError("modes must include int8: it is the artifact that gets published")
        return self


class CalibrateConfig(_Section):
    target_accuracy: float = Field(0.98, gt=0, le=1)
    """The uncertain threshold is the lowest confidence at which the validation images above it
    reach this accuracy."""
    max_threshold: float = Field(0.9, ge=0, le=1)
    ece_bins: int = Field(15, ge=2)
    threshold_rule: Literal["pooled", "per_source"] = "pooled"
    """`pooled`: the `target_accuracy` rule above, over validation as a whole (source-balanced);
    `per_source`: the lowest threshold at which every train source's validation photos are
    confidently wrong (decided and wrong) at most `max_confidently_wrong` of the time; the
    report gives the coverage it costs against the pooled rule."""
    max_confidently_wrong: float = Field(0.02, ge=0, le=1)
    """The per-source rule's target: the worst source's share of confidently-wrong answers."""


class CompositeConfig(_Section):
    """Training photos pasted onto other backgrounds (`training/composite.py`). Off by
    default: check the masks on a contact sheet first (`python -m training.composite_sheet`)."""

    enabled: bool = False
    per_photo: int = Field(1, ge=1, le=2)
    """Composites of each training photo whose mask is trusted."""
    backgrounds: Path | None = None
    """A folder of floor photos to crop backgrounds from; null: procedural textures only."""
    procedural: bool = True
    """Procedural floors (concrete, planks, tiles); with `backgrounds` too, a coin picks."""
    classes: tuple[str, ...] | None = None
    """Only photos of these classes get composites (null: all); e.g. leave out cardboard,
    which mostly fills the frame, so its masks find seams rather than the object."""
    min_cover: float = Field(0.03, ge=0, lt=1)
    max_cover: float = Field(0.85, gt=0, le=1)
    """A mask covering less or more of the photo than these is not trusted (a speck, or an
    object that fills the frame): the photo is left alone."""

    @field_validator("backgrounds")
    @classmethod
    def _folder(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{value} is not a folder")
        return value

    @model_validator(mode="after")
    def _usable(self) -> CompositeConfig:
        if self.min_cover >= self.max_cover:
            raise ValueError("min_cover must be below max_cover")
        if self.enabled and self.backgrounds is None and not self.procedural:
            raise ValueError(
                "enabled, but no backgrounds and procedural: false: nothing to paste on"
            )
        return self


class MlflowConfig(_Section):
    tracking_uri: str = "sqlite:///mlruns.db"
    artifact_location: str = "mlruns"
    experiment: str = "wastesort"
    registered_model: str = "wastesort-classifier"
    aliases: tuple[str, ...] = ("candidate",)

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for alias in value:
            if not re.fullmatch(r"[\w-]{1,255}", alias):
                raise ValueError(f"alias {alias!r}: use letters, digits, '_' and '-'")
            if alias.lower() == "latest" or re.fullmatch(r"v\d+", alias, re.IGNORECASE):
                raise ValueError(f"alias {alias!r} is reserved by MLflow (latest, v<number>)")
        return value


class RegistryConfig(_Section):
    uri: str | None = "models"
    """A local folder or s3://bucket/prefix; null skips publishing."""
    aliases: tuple[str, ...] = ("candidate",)
    """Where a published challenger goes; `production` moves only by `wastesort registry
    promote` (a person, or a passing canary)."""
    golden_per_class: int = Field(2, ge=0, le=20)
    signing_key: FilePath | None = None
    """An ed25519 private key (PEM) to sign the published entry with; bins that require a
    signature refuse unsigned models. Keep the key out of the repository."""

    @field_validator("uri")
    @classmethod
    def _writable(cls, value: str | None) -> str | None:
        if value is not None and value.lower().startswith(("http://", "https://")):
            raise ValueError("an https registry is read-only; publish to a folder or s3://")
        return value

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for alias in value:
            _checked(check_alias, alias)
        return value

    @field_validator("signing_key")
    @classmethod
    def _key(cls, value: Path | None) -> Path | None:
        if value is not None:
            from wastesort.signing import load_private_key  # noqa: PLC0415 (cryptography)

            _checked(load_private_key, value)
        return value


class ChampionConfig(_Section):
    """The challenger (this run's int8 model) against the registry's champion, on the same
    photos; the verdict decides whether the run publishes."""

    alias: str = "production"
    uri: str | None = None
    """The registry holding the champion; null: `registry.uri` (both null: no comparison)."""
    metric: Literal["accuracy", "macro_f1"] = "accuracy"
    max_drop: float = Field(0.01, ge=0, le=1)
    """On no source may the challenger be more than this below the champion (0.01 = 1 point)."""
    better_on: tuple[Literal["field", "union"], ...] = ("field", "union")
    """And it must beat the champion on at least one of these: `field`, every eval source
    together (the field check), or `union`, every scored photo of the classes."""
    force: str | None = None
    """Publish even when the verdict fails; the reason given here is recorded."""

    @field_validator("force")
    @classmethod
    def _reason(cls, value: str | None) -> str | None:
        if value is not None and len(value.strip()) < 3:
            raise ValueError("give the reason for forcing a publish, in words")
        return value


def _checked(check: Any, value: Any) -> None:
    """Run a wastesort check; its error becomes a validation error for the key."""
    try:
        check(value)
    except WastesortError as exc:
        raise ValueError(str(exc)) from None


class Config(_Section):
    name: str = Field("wastesort", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    output_dir: Path = Path("runs")
    cache_dir: Path = Path(".cache/training")
    threads: int | None = Field(None, ge=1)
    """CPU threads for TensorFlow (None: TensorFlow decides)."""
    data: DataConfig = Field(default_factory=DataConfig)
    input: InputConfig = Field(default_factory=InputConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    calibrate: CalibrateConfig = Field(default_factory=CalibrateConfig)
    composite: CompositeConfig = Field(default_factory=CompositeConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    champion: ChampionConfig = Field(default_factory=ChampionConfig)

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.champion.alias in self.registry.aliases:
            raise ValueError(
                f"registry.aliases: {self.champion.alias!r} is the champion's alias; a run "
                "publishes a challenger (e.g. candidate), `wastesort registry promote` moves it"
            )
        if self.data.val_fraction + self.data.test_fraction >= 0.8:
            raise ValueError("data.val_fraction + data.test_fraction must leave 20% to train")
        if self.model.backbone == "mobilenet_v2" and self.model.weights == "pretrained":
            raise ValueError(
                "model.weights: 'pretrained' is the Lite models' bundled file; "
                "use null, 'imagenet' or a path for mobilenet_v2"
            )
        if self.model.backbone == "mobilenet_v2" and self.model.stochastic_depth:
            raise ValueError("model.stochastic_depth: only the Lite backbones have it")
        if self.model.backbone.startswith("efficientnet_lite") and self.model.weights == "imagenet":
            raise ValueError("model.weights: Lite ImageNet weights are 'pretrained' (offline)")
        if self.composite.enabled and self.model.weights is None:
            raise ValueError("composite.enabled: only runs from pretrained weights take composites")
        return self

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    base: dict[str, Any] | None = None,
) -> Config:
    """Read a YAML config (or start from `base`, e.g. a version's recorded config), apply
    `key=value` overrides and validate everything.

    Raises:
        ConfigError: the file is missing or not YAML, or a key is unknown or a value invalid;
            the message names every offending key.
    """
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        try:
            loaded = yaml.load(Path(path).read_text(), Loader=StrictLoader)  # noqa: S506 (safe)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded or {}
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(data, keys, value)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(explain(exc, heading="invalid training config")) from None
