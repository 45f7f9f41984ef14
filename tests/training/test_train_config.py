from __future__ import annotations

from pathlib import Path

import pytest

from training.__main__ import main
from training.config import Config, ConfigError, load_config, parse_override

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


@pytest.mark.parametrize("name", ["default.yaml", "quick.yaml", "tiny.yaml"])
def test_shipped_configs_are_valid(name: str):
    assert isinstance(load_config(CONFIGS / name), Config)


def test_overrides_are_typed_and_nested():
    cfg = load_config(None, ["train.head.epochs=3", "input.height=192", "registry.uri=null"])
    assert cfg.train.head.epochs == 3
    assert cfg.input.height == 192
    assert cfg.registry.uri is None
    assert parse_override("quantize.modes=[int8]") == (["quantize", "modes"], ["int8"])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.hed.epochs=3", "train.hed"),
        ("nonsense=1", "nonsense"),
        ("data.val_fraction=0.9", "data.val_fraction"),
        ("input.resize=stretch", "input.resize"),
        ("train.batch_size=many", "train.batch_size"),
        ("quantize.gate.min_agreement=2", "quantize.gate.min_agreement"),
        ("train.mixup=-1", "train.mixup"),
        ("train.fine_tune_tolerance=2", "train.fine_tune_tolerance"),
        ("model.stochastic_depth=1", "model.stochastic_depth"),
        ("registry.signing_key=/nonexistent/key.pem", "registry.signing_key"),
        ("model.weights=pretrainde", "model.weights"),
        ("model.weights=/nonexistent/lite0.weights.h5", "model.weights"),
        ("registry.aliases=[Prod!]", "registry.aliases"),
        ("registry.aliases=[model.tflite]", "registry.aliases"),
        ("mlflow.aliases=[v1]", "mlflow.aliases"),
        ("mlflow.aliases=[latest]", "mlflow.aliases"),
        ("registry.uri=https://models.example.com/wastesort", "registry.uri"),
    ],
)
def test_bad_key_or_value_names_the_key(override: str, key: str):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_unknown_key_in_file(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  head:\n    epochz: 3\n")
    with pytest.raises(ConfigError, match=r"train\.head\.epochz: unknown key"):
        load_config(path)


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="int8"):
        load_config(None, ["quantize.modes=[float32]"])
    with pytest.raises(ConfigError, match="mobilenet_v2"):
        load_config(None, ["model.backbone=mobilenet_v2"])  # weights: pretrained is Lite0's
    with pytest.raises(ConfigError, match=r"model\.stochastic_depth"):
        load_config(
            None,
            ["model.backbone=mobilenet_v2", "model.weights=null", "model.stochastic_depth=0.2"],
        )


def test_missing_file_and_bad_override_syntax(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        load_config(None, ["train.head.epochs"])


def test_cli_rejects_bad_config_before_any_work(capsys: pytest.CaptureFixture[str]):
    code = main(["run", "--config", str(CONFIGS / "quick.yaml"), "train.head.lr=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "train.head.lr: unknown key" in err


def test_cli_prints_resolved_config(capsys: pytest.CaptureFixture[str]):
    assert main(["run", "--config", str(CONFIGS / "quick.yaml"), "--print-config"]) == 0
    assert '"backbone": "efficientnet_lite0"' in capsys.readouterr().out


def test_a_public_key_is_not_a_signing_key(tmp_path: Path):
    from wastesort.signing import generate_keypair

    private, public = generate_keypair()
    (tmp_path / "k.pem").write_bytes(private)
    (tmp_path / "k.pub").write_bytes(public)
    assert load_config(None, [f"registry.signing_key={tmp_path / 'k.pem'}"]).registry.signing_key
    with pytest.raises(ConfigError, match=r"registry\.signing_key: .*not a PEM private key"):
        load_config(None, [f"registry.signing_key={tmp_path / 'k.pub'}"])


def test_a_weights_file_is_accepted(tmp_path: Path):
    (tmp_path / "mine.weights.h5").write_bytes(b"")
    cfg = load_config(None, [f"model.weights={tmp_path / 'mine.weights.h5'}"])
    assert cfg.model.weights == str(tmp_path / "mine.weights.h5")


def test_a_key_given_twice_in_a_file_is_an_error(tmp_path: Path):
    path = tmp_path / "dup.yaml"
    path.write_text("train: {head: {epochs: 3}}\nname: x\ntrain: {batch_size: 8}\n")
    with pytest.raises(ConfigError, match="key 'train' appears twice"):
        load_config(path)


def test_the_default_config_publishes_a_challenger_judged_against_production():
    cfg = load_config(CONFIGS / "default.yaml")
    assert cfg.registry.aliases == ("candidate",)
    assert (cfg.champion.alias, cfg.champion.metric, cfg.champion.max_drop) == (
        "production",
        "accuracy",
        0.01,
    )
    assert cfg.champion.better_on == ("field", "union")
    assert cfg.champion.force is None
    assert [(s.name, s.role) for s in cfg.data.sources] == [
        ("trashnet", "train"),
        ("realwaste-sample", "eval"),
        ("drinking-waste", "train"),
    ]
