"""The capture bucket: its lifecycle expires what nobody labelled (by the tag the core writes),
bins write only their own tagged captures, and the API gets the capture and label prefixes (and
`API_CAPTURE_URI`) only when `capture` is on."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from aws_cdk.assertions import Template
from infra_testlib import cfn_lint, only, statements
from moto import mock_aws

from infra import constants as c
from infra.app import build_app
from infra.config import ConfigError, InfraConfig

EXPIRE_DAYS = 14
RECORDS_DAYS = 7


def _bucket_id(template_json: dict) -> str:
    found = [
        k
        for k, v in template_json["Resources"].items()
        if v["Type"] == "AWS::S3::Bucket" and k.startswith("CapturesBucket")
    ]
    assert len(found) == 1, found
    return found[0]


def _api_function(template: Template) -> dict[str, Any]:
    found = {
        k: v
        for k, v in template.find_resources("AWS::Lambda::Function").items()
        if k.startswith("ServingFunction")
    }
    return only(found)


@pytest.fixture(scope="module")
def captured(context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The main stage with capture on (cdk-nag runs inside synth: a finding fails it)."""
    ctx = {
        **context,
        "capture": "true",
        "capture_sample": "0.05",
        "capture_expire_days": str(EXPIRE_DAYS),
        "records_expire_days": str(RECORDS_DAYS),
    }
    app, stack = build_app(ctx, outdir=str(tmp_path_factory.mktemp("captured.out")))
    return app.synth().get_stack_by_name(stack.stack_name).template


def test_unlabelled_captures_expire_and_so_do_their_old_versions(template_json: dict) -> None:
    bucket = template_json["Resources"][_bucket_id(template_json)]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = {r.get("Id", ""): r for r in bucket["LifecycleConfiguration"]["Rules"]}
    expire = rules["ExpireUnlabelledCaptures"]
    assert expire["Status"] == "Enabled"
    assert expire["Prefix"] == "captures/"
    assert expire["TagFilters"] == [{"Key": "labelled", "Value": "false"}]
    assert expire["ExpirationInDays"] == 30  # the default
    assert not [r for r in rules.values() if "labels" in json.dumps(r)]  # labels never expire
    noncurrent = [r for r in rules.values() if "NoncurrentVersionExpiration" in r]
    assert [r["NoncurrentVersionExpiration"] for r in noncurrent] == [{"NoncurrentDays": 1}]
    assert rules["RemoveExpiredDeleteMarkers"]["ExpiredObjectDeleteMarker"] is True


def test_the_expiry_is_a_context_key(captured: dict) -> None:
    bucket = captured["Resources"][_bucket_id(captured)]["Properties"]
    rules = {r.get("Id", ""): r for r in bucket["LifecycleConfiguration"]["Rules"]}
    assert rules["ExpireUnlabelledCaptures"]["ExpirationInDays"] == EXPIRE_DAYS


def test_prediction_records_expire_after_a_context_configured_number_of_days(
    template_json: dict, captured: dict
) -> None:
    for template, days in ((template_json, 30), (captured, RECORDS_DAYS)):
        bucket = template["Resources"][_bucket_id(template)]["Properties"]
        rules = {r.get("Id", ""): r for r in bucket["LifecycleConfiguration"]["Rules"]}
        records = rules["ExpirePredictionRecords"]
        assert records["Status"] == "Enabled"
        assert records["Prefix"] == f"{c.RECORDS_PREFIX}/"
        assert "TagFilters" not in records
        assert records["ExpirationInDays"] == days


def test_records_must_outlive_the_drift_window() -> None:
    base = {"model_version": "v1", "drift_window_hours": "48"}
    with pytest.raises(ConfigError, match="records_expire_days must exceed drift_window_hours"):
        InfraConfig.from_context({**base, "records_expire_days": "2"})
    assert InfraConfig.from_context({**base, "records_expire_days": "3"}).records_expire_days == 3
    with pytest.raises(ConfigError, match="records_expire_days"):
        InfraConfig.from_context({"model_version": "v1", "records_expire_days": "0"})


def test_a_device_writes_only_its_own_captures_and_only_tagged_to_expire(
    template_json: dict,
) -> None:
    found = [s for s in statements(template_json, "DevicesRole") if "CapturesBucket" in str(s)]
    # the records grant beside it: tests/infra/test_infra_drift.py
    found = [s for s in found if "/records/" not in str(s)]
    assert len(found) == 1
    grant = found[0]
    assert grant["Effect"] == "Allow"
    assert sorted(grant["Action"]) == ["s3:PutObject", "s3:PutObjectTagging"]
    bucket, key = grant["Resource"]["Fn::Join"][1]
    assert bucket["Fn::GetAtt"] == [_bucket_id(template_json), "Arn"]
    assert key == "/captures/${credentials-iot:ThingName}/*"
    assert grant["Condition"] == {
        "StringEquals": {"s3:RequestObjectTag/labelled": "false"},
        "ForAllValues:StringEquals": {"s3:RequestObjectTagKeys": ["labelled"]},
    }
    outputs = template_json["Outputs"]
    assert outputs["CaptureBucket"]["Value"] == {"Ref": _bucket_id(template_json)}


def test_capture_is_off_by_default(template: Template, template_json: dict) -> None:
    env = _api_function(template)["Properties"]["Environment"]["Variables"]
    assert c.ENV_CAPTURE_URI not in env
    assert c.ENV_CAPTURE_SAMPLE not in env
    api = statements(template_json, "ServingFunctionRole")
    assert "CapturesBucket" not in json.dumps(api)


def test_with_capture_on_the_api_writes_captures_and_labels(captured: dict) -> None:
    template = Template.from_json(captured)
    bucket = _bucket_id(captured)
    env = _api_function(template)["Properties"]["Environment"]["Variables"]
    assert env[c.ENV_CAPTURE_URI] == {"Fn::Join": ["", ["s3://", {"Ref": bucket}]]}
    assert env[c.ENV_CAPTURE_SAMPLE] == "0.05"
    api = [s for s in statements(captured, "ServingFunctionRole") if bucket in json.dumps(s)]
    writes = next(s for s in api if "s3:GetObject" in s["Action"])
    assert sorted(writes["Action"]) == ["s3:GetObject", "s3:PutObject", "s3:PutObjectTagging"]
    keys = sorted(r["Fn::Join"][1][1] for r in writes["Resource"])
    assert keys == ["/captures/*", "/labels/*"]
    listing = next(s for s in api if s["Action"] == "s3:ListBucket")
    assert listing["Resource"] == {"Fn::GetAtt": [bucket, "Arn"]}
    records = next(s for s in api if s["Action"] == "s3:PutObject")  # write-only
    assert records["Resource"]["Fn::Join"][1][1] == "/records/api/*"
    assert len(api) == 3


def test_turning_capture_on_is_a_new_lambda_version(template_json: dict, captured: dict) -> None:
    def versions(t: dict) -> set[str]:
        return {k for k, v in t["Resources"].items() if v["Type"] == "AWS::Lambda::Version"}

    assert versions(template_json) != versions(captured)  # so it deploys through the canary


def test_capture_sample_needs_capture() -> None:
    with pytest.raises(ConfigError, match="capture_sample needs capture"):
        InfraConfig.from_context({"model_version": "v1", "capture_sample": "0.1"})


def test_the_tag_and_prefixes_are_the_ones_the_core_and_the_edge_write() -> None:
    from edge.telemetry import CAPTURE_PREFIX as EDGE_PREFIX
    from wastesort import capture, records

    assert capture.CAPTURES == c.CAPTURE_PREFIX == EDGE_PREFIX
    assert capture.LABELS == c.LABELS_PREFIX
    assert f"{c.CAPTURE_TAG}={c.CAPTURE_TAG_UNLABELLED}" == capture.UNLABELLED
    assert capture.LABELLED_TAG == c.CAPTURE_TAG
    assert records.RECORDS_PREFIX == c.RECORDS_PREFIX
    assert capture.API_SOURCE == c.API_RECORD_SOURCE


class _Prediction:
    model_version = "v1"
    predicted_class = "glass"
    confidence = 0.4
    all_confidences = {"glass": 0.4, "paper": 0.6}  # noqa: RUF012
    decision = "uncertain"


def test_the_core_tags_captures_on_s3_and_retags_them_when_labelled(tmp_path) -> None:
    """What the lifecycle rule filters on, the core writes (moto S3)."""
    from PIL import Image

    from wastesort.capture import CaptureStore, key_of
    from wastesort.registry.local import LocalStore
    from wastesort.registry.s3 import S3Store

    photo = tmp_path / "p.jpg"
    Image.new("RGB", (64, 48), "green").save(photo)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="captures-test")
        store = CaptureStore(S3Store("s3://captures-test", client=client))
        record = store.save(photo.read_bytes(), _Prediction(), reason="uncertain")

        def tags(suffix: str) -> list[dict[str, str]]:
            key = f"{key_of(record.id)}{suffix}"
            return client.get_object_tagging(Bucket="captures-test", Key=key)["TagSet"]

        assert tags(".jpg") == tags(".json") == [{"Key": "labelled", "Value": "false"}]
        event = store.add_label(record.id, "glass", by="alice", source="review")
        assert tags(".jpg") == tags(".json") == [{"Key": "labelled", "Value": "true"}]
        label_key = next(iter(store.store.list(f"labels/{record.id}/")))
        assert client.get_object_tagging(Bucket="captures-test", Key=label_key)["TagSet"] == []
        assert store.labels(record.id) == [event]
    folder = CaptureStore(LocalStore(str(tmp_path / "store")))  # a folder has no tags
    saved = folder.save(photo.read_bytes(), _Prediction(), reason="uncertain")
    folder.add_label(saved.id, "glass", by="alice", source="review")


def test_the_capture_template_is_cfn_lint_clean(captured: dict, tmp_path) -> None:
    cfn_lint(captured, tmp_path)
