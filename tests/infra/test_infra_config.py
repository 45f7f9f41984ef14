"""Context parsing: bad or missing context is one clear line, before any construct exists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from infra_testlib import MODEL_VERSION

from infra.app import build_app, main
from infra.config import ConfigError, InfraConfig


def _config(**context: Any) -> InfraConfig:
    return InfraConfig.from_context({"model_version": MODEL_VERSION, **context})


def test_defaults_are_the_issue_defaults() -> None:
    config = _config()
    assert (config.deployment, config.traffic_percent, config.interval_minutes) == ("canary", 10, 5)
    assert config.stage == "dev"
    assert config.model_uri("b") == f"s3://b/registry@{MODEL_VERSION}"
    assert config.stack_name == "wastesort-dev"


def test_command_line_strings_are_coerced() -> None:
    config = _config(memory_mb="2048", snapstart="true", reserved_concurrency="3", waf_acl_arn="")
    assert (config.memory_mb, config.snapstart, config.reserved_concurrency) == (2048, True, 3)
    assert config.waf_acl_arn is None


def test_cdk_json_context_is_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    context = json.loads((root / "cdk.json").read_text())["context"]
    config = InfraConfig.from_context({**context, "model_alias": "production"})
    assert config.package == Path("build/lambda/arm64")


def test_cors_origins_and_url_allowlist_from_the_command_line_or_cdk_json() -> None:
    from_cli = _config(cors_origins="https://a.example.com, HTTPS://B.example.com:8443,")
    assert from_cli.cors_origins == ("https://a.example.com", "https://b.example.com:8443")
    from_json = _config(url_allowlist=["images.example.com", "*.cdn.example.com"])
    assert from_json.url_allowlist == ("images.example.com", "*.cdn.example.com")
    unset = _config(cors_origins="", url_allowlist=None)
    assert (unset.cors_origins, unset.url_allowlist) == ((), ())


def test_admin_key_ids_keep_their_case_and_must_be_ids() -> None:
    assert _config(admin_key_ids="Ab12cd34EF, x9").admin_key_ids == ("Ab12cd34EF", "x9")
    assert _config(admin_key_ids=["k1"]).admin_key_ids == ("k1",)
    assert _config(admin_key_ids="").admin_key_ids == ()
    with pytest.raises(ConfigError, match="admin_key_ids"):
        _config(admin_key_ids="not an id")


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"model_version": None}, "set exactly one of model_version"),
        ({"model_alias": "production"}, "set model_version or model_alias, not both"),
        (
            {"model_verison": "v2"},
            "unknown context key 'model_verison' (did you mean 'model_version'?)",
        ),
        ({"memory_mb": "64"}, "memory_mb: Input should be greater than or equal to 128 (got '64')"),
        ({"log_retention_days": "31"}, "log_retention_days: CloudWatch accepts one of"),
        ({"stage": "Prod_1"}, "stage: String should match pattern"),
        ({"model_sha256": "abc"}, "model_sha256: String should match pattern"),
        (
            {"deployment": "blue-green"},
            "deployment: Input should be 'canary', 'linear' or 'all_at_once'",
        ),
        ({"timeout_s": "60"}, "timeout_s: Input should be less than or equal to 29"),
        ({"alarm_email": "ops"}, "alarm_email: String should match pattern"),
        (
            {"cors_origins": "https://app.example.com/"},
            "cors_origins: https://app.example.com/: an origin is `https://host[:port]`",
        ),
        (
            {"url_allowlist": "images.example.com,https://cdn.example.com"},
            "url_allowlist: https://cdn.example.com: a host name",
        ),
        (
            {
                "waf_managed": "true",
                "waf_acl_arn": "arn:aws:wafv2:eu-west-1:123456789012:regional/webacl/a/b",
            },
            "waf",
        ),
    ],
)
def test_bad_context_is_one_clear_error(context: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        _config(**context)
    assert message in str(error.value)
    assert "Traceback" not in str(error.value)


def test_registry_only_needs_no_model() -> None:
    config = InfraConfig.from_context({"registry_only": "true"})
    assert config.model_ref == ""


def test_cdk_keys_are_not_ours_to_judge() -> None:
    config = _config(
        **{"@aws-cdk/core:newStyleStackSynthesis": True, "aws:cdk:enable-path-metadata": True}
    )
    assert config.model_version == MODEL_VERSION


def test_missing_package_says_to_run_make_package(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run `make package` first"):
        build_app({"model_version": MODEL_VERSION, "package": str(tmp_path / "nope")})


def test_package_without_the_hook_is_refused(tmp_path: Path) -> None:
    (tmp_path / "functions/api").mkdir(parents=True)
    (tmp_path / "functions/api/handler.py").write_text("")
    with pytest.raises(ConfigError, match=r"functions/hooks/pre_traffic\.py"):
        _config(package=str(tmp_path)).require_package()


def test_main_prints_one_line_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main({"model_version": "no spaces allowed"}) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wastesort infra: bad CDK context: model_version: String should match")
    assert "\n" not in err


def test_ops_doc_lists_every_context_key() -> None:
    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs/ops.md").read_text()
    missing = [key for key in InfraConfig.model_fields if f"`{key}`" not in doc]
    assert missing == []
