"""MLflow: a local SQLite store and artifact folder by default, any tracking URI by config.

Registers each run's int8 model and points MLflow 3 aliases at it (stages are deprecated).
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

from training.config import ConfigError, MlflowConfig

log = logging.getLogger(__name__)


def git_commit(cwd: Path | None = None) -> str | None:
    """HEAD's commit, with `-dirty` when tracked files differ; None outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 (git from PATH is the point)
            capture_output=True,
            text=True,
            check=True,
            cwd=cwd,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
            cwd=cwd,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


class Tracker:
    """A thin wrapper over one MLflow run."""

    def __init__(self, cfg: MlflowConfig, run_name: str) -> None:
        import mlflow  # noqa: PLC0415 (heavy; only when a run starts)

        self.cfg = cfg
        self.mlflow = mlflow
        mlflow.set_tracking_uri(cfg.tracking_uri)
        experiment = mlflow.get_experiment_by_name(cfg.experiment)
        location = cfg.artifact_location
        if "://" not in location:
            location = Path(location).resolve().as_uri()
        if experiment is None:
            experiment_id = mlflow.create_experiment(cfg.experiment, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
            if experiment.artifact_location.rstrip("/") != location.rstrip("/"):
                # MLflow fixes an experiment's artifact folder when it is created.
                message = (
                    f"mlflow.artifact_location: experiment {cfg.experiment!r} keeps its "
                    f"artifacts in {experiment.artifact_location}, not {location}; set that, "
                    "or a new mlflow.experiment"
                )
                if cfg.tracking_uri.startswith(("http://", "https://", "databricks")):
                    log.warning("%s", message)  # a shared server's experiment: its choice stands
                else:
                    raise ConfigError(message)
        self.run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name)
        self.run_id: str = self.run.info.run_id

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        """A run that raised (a refused gate included) is marked FAILED; the error goes on."""
        self.end("FAILED" if exc_type is not None else "FINISHED")

    def params(self, config: dict[str, Any]) -> None:
        flat = {k: str(v)[:500] for k, v in flatten(config).items()}
        self.mlflow.log_params(flat)
        self.mlflow.log_dict(config, "config.json")

    def tags(self, tags: dict[str, Any]) -> None:
        self.mlflow.set_tags({k: str(v) for k, v in tags.items() if v is not None})

    def epoch(self, row: dict[str, Any], step: int) -> None:
        phase = row["phase"]
        self.mlflow.log_metrics(
            {
                f"{phase}.loss": row["loss"],
                f"{phase}.val_macro_f1": row["val_macro_f1"],
                f"{phase}.val_accuracy": row["val_accuracy"],
            },
            step=step,
        )

    def metrics(self, metrics: dict[str, float]) -> None:
        self.mlflow.log_metrics({k: float(v) for k, v in metrics.items()})

    def log_run_folder(self, run_dir: Path) -> None:
        """Everything in the run folder but the SavedModels (kept locally for re-conversion; the
        TFLite files are the product)."""
        for child in sorted(run_dir.iterdir()):
            if child.name.startswith("saved_model"):
                continue
            if child.is_dir():
                self.mlflow.log_artifacts(str(child), artifact_path=child.name)
            else:
                self.mlflow.log_artifact(str(child))

    def register(
        self, artifact_path: str, *, gate_passed: bool, verdict_passed: bool = True
    ) -> str:
        """Register `artifact_path` of this run as a new model version, tagged with the
        quantization gate's and the champion comparison's verdicts; the configured aliases
        move to it only if both passed (or the comparison was forced)."""
        client = self.mlflow.MlflowClient()
        name = self.cfg.registered_model
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(name, description="wastesort int8 TFLite classifier")
        source = f"{self.run.info.artifact_uri}/{artifact_path}"
        tags = {
            "gate": "passed" if gate_passed else "failed",
            "verdict": "passed" if verdict_passed else "failed",
        }
        version = client.create_model_version(name, source, run_id=self.run_id, tags=tags)
        for alias in self.cfg.aliases if gate_passed and verdict_passed else ():
            client.set_registered_model_alias(name, alias, version.version)
        return str(version.version)

    def end(self, status: str = "FINISHED") -> None:
        self.mlflow.end_run(status=status)
