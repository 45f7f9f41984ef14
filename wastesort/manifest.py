"""The registry manifest: the one record of what was published and what each alias serves.

Every consumer (the API, the edge runner, the deploy hook, training's publish step) reads the
labels, the input spec, the temperature and the uncertain threshold from here; nobody
hard-codes them.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from wastesort.errors import ManifestError, UnsupportedSchemaError

SCHEMA_VERSION = 2
"""The newest schema this release reads and writes; see `SUPPORTED_SCHEMAS`."""
SUPPORTED_SCHEMAS = (1, 2)
"""Schema 2 adds named `outputs` and a `reference` on an entry, and `rollout` on an alias.
A manifest that uses none of them is written as schema 1, so older readers keep reading it."""
DEFAULT_ALIAS = "production"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # version ids and alias names
_NAME_RULE = "letters, digits, '.', '_' and '-' (max 128), no '..', not ending in '.tflite'"


def _valid_name(name: str) -> bool:
    """Safe as a path segment and after '@' in a model URI (where `.tflite` means a file)."""
    return bool(_NAME.match(name)) and ".." not in name and not name.endswith(".tflite")


def check_alias(alias: str) -> None:
    """Raise ManifestError unless `alias` can name an alias."""
    if not _valid_name(alias):
        raise ManifestError(f"alias {alias!r}: alias names use {_NAME_RULE}")


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class _Schema2Fields(_Model):
    """A model with optional schema-2 fields, left out of its JSON while unset: a schema-1
    reader (extra="forbid") then reads it, and signatures over schema-1 entries stay valid."""

    _schema2: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _drop_unset_schema2(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for name in self._schema2:
            if data.get(name) is None:
                data.pop(name, None)
        return data

    def schema2_fields(self) -> list[str]:
        """The schema-2 fields this object uses."""
        return [name for name in self._schema2 if getattr(self, name) is not None]


class InputSpec(_Model):
    """What the network takes; `wastesort.preprocess` turns image bytes into exactly this."""

    height: int = Field(gt=0, le=4096)
    width: int = Field(gt=0, le=4096)
    channels: Literal[3] = 3
    dtype: Literal["uint8", "int8", "float32"] = "uint8"
    scale: float = 1.0
    zero_point: int = 0
    resize: Literal["squash", "center_crop", "letterbox"] = "squash"
    """`squash` stretches the whole photo to height x width; `center_crop` scales the short
    side then crops the middle; `letterbox` keeps the aspect ratio and pads with white."""
    resample: Literal["bilinear", "bicubic", "nearest"] = "bilinear"


class OutputSpec(_Model):
    """How to read one output tensor. `embedding` is the pooled penultimate features (schema 2,
    under `ModelEntry.outputs` only)."""

    kind: Literal["logits", "probabilities", "embedding"] = "logits"
    dtype: Literal["uint8", "int8", "float32"] = "float32"
    scale: float = 1.0
    zero_point: int = 0


class ArtifactRef(_Model):
    """A file in the registry, addressed relative to the registry root."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class GoldenItem(_Model):
    """A known image with its expected answer: the canary hook and the edge self-test replay it."""

    image: ArtifactRef
    expected_class: str
    scores: dict[str, float] = Field(default_factory=dict)


class ModelEntry(_Schema2Fields):
    _schema2 = ("outputs", "reference")

    version: str
    artifact: ArtifactRef
    created_at: datetime = Field(default_factory=utcnow)
    labels: list[str] = Field(min_length=2)
    input: InputSpec
    output: OutputSpec = Field(default_factory=OutputSpec)
    metrics: dict[str, Any] = Field(default_factory=dict)
    temperature: float = Field(default=1.0, gt=0)
    uncertain_threshold: float = Field(default=0.0, ge=0, le=1)
    dataset_fingerprint: str | None = None
    mlflow_run_id: str | None = None
    source_config: dict[str, Any] | None = None
    golden_set: list[GoldenItem] = Field(default_factory=list)
    extra_artifacts: dict[str, ArtifactRef] = Field(default_factory=dict)
    """Variants of the same model, e.g. `edgetpu` for the `*_edgetpu.tflite` compile."""
    signature: str | None = None
    """Base64 ed25519 signature over `signing_payload(entry)`; see `wastesort.signing`."""
    outputs: dict[str, OutputSpec] | None = None
    """Schema 2: the artifact's outputs by signature name, `logits` (the same as `output`) and
    `embedding`; None for a one-output artifact (its one output is the logits)."""
    reference: ArtifactRef | None = None
    """Schema 2: the reference file (`wastesort.reference`) drift reports compare against."""

    @model_validator(mode="after")
    def _logits_named(self) -> ModelEntry:
        if self.outputs is not None:
            if "logits" not in self.outputs:
                raise ValueError("outputs must name a 'logits' output")
            if self.outputs["logits"] != self.output:
                raise ValueError("outputs['logits'] must be the same as output")
        return self

    @field_validator("version")
    @classmethod
    def _valid_version(cls, value: str) -> str:
        if not _valid_name(value):
            raise ValueError(f"version ids use {_NAME_RULE}")
        return value

    @classmethod
    def check_version(cls, version: str) -> None:
        """Raise ManifestError unless `version` is a valid version id."""
        try:
            cls._valid_version(version)
        except ValueError as exc:
            raise ManifestError(f"{version!r}: {exc}") from None

    @property
    def sha256(self) -> str:
        return self.artifact.sha256

    @property
    def size(self) -> int:
        return self.artifact.size

    def signing_payload(self) -> bytes:
        """Canonical bytes that a signature covers: the entry without its signature."""
        data = self.model_dump(mode="json", exclude={"signature"})
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


class AliasEvent(_Model):
    at: datetime = Field(default_factory=utcnow)
    by: str
    action: Literal["promote", "rollback"]
    from_version: str | None = None
    to_version: str
    reason: str | None = None


class Rollout(_Model):
    """Schema 2: a staged rollout on an alias. Devices in the cohort get the alias's `version`
    first, the others keep `stable_version` (`wastesort.registry.rollout`, docs/core.md)."""

    model_config = ConfigDict(extra="allow")

    stable_version: str | None = None
    percent: float | None = Field(default=None, ge=0, le=100)
    """The share of devices, by a stable hash of their id, that get the new version."""
    cohorts: list[str] = Field(default_factory=list)
    """Device ids that get the new version whatever their hash (pilot bins)."""
    started_at: datetime | None = None

    def includes(self, device_id: str | None) -> bool:
        """Whether `device_id` gets the new version; no device id never does."""
        if device_id is None:
            return False
        from wastesort.registry.rollout import in_cohort  # noqa: PLC0415 (a cycle otherwise)

        return device_id in self.cohorts or in_cohort(device_id, self.percent or 0.0)


class Alias(_Schema2Fields):
    _schema2 = ("rollout",)

    version: str
    history: list[AliasEvent] = Field(default_factory=list)
    rollout: Rollout | None = None

    def version_for(self, device_id: str | None = None) -> str:
        """The version this alias gives `device_id`: during a rollout the new `version` to the
        cohort and `stable_version` to every other device and to every reader without a device
        id (the API, the CLI, the deploy hook); otherwise `version`."""
        rollout = self.rollout
        if rollout is None or rollout.stable_version is None or rollout.includes(device_id):
            return self.version
        return rollout.stable_version


class Manifest(_Model):
    schema_version: int = 1
    updated_at: datetime = Field(default_factory=utcnow)
    versions: dict[str, ModelEntry] = Field(default_factory=dict)
    aliases: dict[str, Alias] = Field(default_factory=dict)

    @classmethod
    def parse(cls, raw: bytes | str) -> Manifest:
        """Parse manifest bytes, refusing schema versions this reader does not know."""
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # decode, int-size and nesting errors
            raise ManifestError(f"manifest is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ManifestError("manifest must be a JSON object")
        found = data.get("schema_version")
        if found not in SUPPORTED_SCHEMAS or isinstance(found, bool):
            raise UnsupportedSchemaError(
                f"manifest schema_version {found!r} is not supported by this wastesort "
                f"(it reads versions {', '.join(map(str, SUPPORTED_SCHEMAS))}); "
                "upgrade wastesort to read it"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ManifestError(f"manifest is invalid: {exc}") from exc

    def schema_needs(self) -> dict[str, list[str]]:
        """What forces schema 2: `{"version <id>" | "alias <name>": [fields]}`, empty when
        schema 1 will do."""
        needs = {f"version {v}": e.schema2_fields() for v, e in self.versions.items()}
        needs.update({f"alias {a}": alias.schema2_fields() for a, alias in self.aliases.items()})
        return {what: fields for what, fields in needs.items() if fields}

    def required_schema(self) -> int:
        """The lowest schema that can hold this manifest: 1 unless schema-2 fields are used."""
        return 2 if self.schema_needs() else 1

    def dumps(self) -> bytes:
        """The manifest as written: schema 1 whenever nothing of schema 2 is used, so readers
        older than schema 2 (devices in the field) keep reading the registry."""
        self.schema_version = self.required_schema()
        return (self.model_dump_json(indent=2) + "\n").encode()

    def entry(self, version: str) -> ModelEntry:
        try:
            return self.versions[version]
        except KeyError:
            known = ", ".join(self.versions) or "none"
            raise ManifestError(
                f"unknown model version {version!r} (published: {known})", code="unknown_version"
            ) from None

    def resolve(self, ref: str | None = None, device_id: str | None = None) -> ModelEntry:
        """Return the entry that `ref` names: an alias first, else a version id.

        Args:
            ref: an alias (`production`, `canary`, ...) or a version id; None means `production`.
            device_id: the asking device; during a rollout only a device in the cohort gets
                the new version (`Alias.version_for`), everyone else the stable one.
        """
        ref = ref or DEFAULT_ALIAS
        if ref in self.aliases:
            return self.entry(self.aliases[ref].version_for(device_id))
        if ref in self.versions:
            return self.versions[ref]
        raise ManifestError(
            f"{ref!r} is neither an alias ({', '.join(self.aliases) or 'none'}) "
            f"nor a published version ({', '.join(self.versions) or 'none'})",
            code="unknown_version",
        )
