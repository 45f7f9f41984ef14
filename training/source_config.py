"""The config's `data` section: which photo sets a run reads, what each is for, and how it is split.

`data.sources` lists the sets: role `train` (split into train/validation/test) or `eval` (scored,
never trained on). `data.dir` is the short form of one `train` source named `trashnet`, the
configs' form before there were several, which splits exactly as it always did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TRASHNET = "trashnet"
"""The source `data.dir` names."""

DEFAULT_DIR = Path("data/trashnet")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(_Section):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    """How reports, the split file and overrides (`data.sources.<name>.dir=...`) name it."""
    dir: Path
    """A dataset folder: `<label>/<file>` and an optional `index.csv` (wastesort/dataset.py)."""
    role: Literal["train", "eval"]
    """`train`: split into train, validation and test; `eval`: scored whole, never trained on
    (a photo it shares with a train source is an error)."""
    class_map: dict[str, str | None] = Field(default_factory=dict)
    """The folder's label -> a class; null: none of the classes (scored like `unmapped/`: it
    should come out `uncertain`). Labels not listed keep their name."""
    share: float = Field(1.0, gt=0)
    """This source's share of a class's training weight, against the other train sources that
    hold the class (equal shares by default); the class's own weight does not change."""


class DataConfig(_Section):
    dir: Path | None = None
    """Short for one train source named `trashnet` at this folder; with `sources` also given,
    it sets the `trashnet` source's folder (so `make train DATA_DIR=...` keeps working)."""
    sources: list[SourceConfig] = Field(default_factory=list)
    """The photo sets, each `{name, dir, role, class_map, share}`; none means `data.dir` (or
    `data/trashnet`) as the one `trashnet` train source."""
    labels: tuple[str, ...] | None = None
    """The classes; null: the train sources' labels after their class maps."""
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    split_seed: int = 1337
    """Each train source is split on its own with this seed: adding a source leaves the others'
    splits as they were."""
    extensions: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
    test_include: tuple[Path, ...] = ()
    """Files or folders whose images (matched by content hash) must land in the test split:
    the repo's `samples/` are shown in the README and used by tests, so they are never
    trained or tuned on."""
    max_images_per_class: int | None = Field(None, gt=0)
    """Cap per class and source (deterministic subset); for smoke tests."""

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        """`data.dir` -> the `trashnet` source; afterwards `dir` is always null."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        folder = data.pop("dir", None)
        sources = list(data.get("sources") or [])
        if not sources:
            sources = [{"name": TRASHNET, "dir": folder or DEFAULT_DIR, "role": "train"}]
        elif folder is not None:
            named = [s for s in sources if isinstance(s, dict) and s.get("name") == TRASHNET]
            if not named:
                raise ValueError(
                    "data.dir names the 'trashnet' source's folder, and data.sources has no "
                    "'trashnet'; set data.sources.<name>.dir instead"
                )
            sources = [
                {**s, "dir": folder} if isinstance(s, dict) and s.get("name") == TRASHNET else s
                for s in sources
            ]
        data["sources"] = sources
        return data

    @model_validator(mode="after")
    def _consistent(self) -> DataConfig:
        names = [s.name for s in self.sources]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"sources: {', '.join(twice)} named twice")
        if not any(s.role == "train" for s in self.sources):
            raise ValueError("sources: at least one source needs role 'train'")
        return self

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and len(set(value)) < 2:
            raise ValueError("a classifier needs at least 2 distinct classes")
        return value

    def source(self, name: str) -> SourceConfig:
        return next(s for s in self.sources if s.name == name)

    def by_role(self, role: str) -> list[SourceConfig]:
        return [s for s in self.sources if s.role == role]
