from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import boto3
import pytest

from tests.conftest import moto_bucket, sample_bytes, tiny_fields
from wastesort import Classifier
from wastesort.classifier import split_ref
from wastesort.errors import (
    IntegrityError,
    ManifestError,
    NotFoundError,
    RegistryError,
    SignatureError,
    UnsupportedSchemaError,
    VersionExistsError,
)
from wastesort.manifest import Manifest
from wastesort.registry import GoldenSample, Registry
from wastesort.registry.s3 import S3Store
from wastesort.signing import generate_keypair, sign, verify

BUCKET = "wastesort-test-registry"


@pytest.fixture
def s3():
    with moto_bucket(BUCKET) as client:
        yield client


@pytest.fixture(params=["local", "s3"])
def registry(request, tmp_path: Path) -> Registry:
    if request.param == "local":
        return Registry.from_uri(tmp_path / "reg", cache_dir=tmp_path / "cache")
    client = request.getfixturevalue("s3")
    return Registry(
        S3Store(f"s3://{BUCKET}/models/trash", client=client), cache_dir=tmp_path / "cache"
    )


def publish(registry: Registry, model: Path, version: str, **kwargs) -> None:
    registry.publish(model, version=version, **tiny_fields(), **kwargs)


def test_publish_resolve_promote_rollback_round_trip(registry: Registry, tiny_int8: Path):
    golden = [GoldenSample("g.jpg", sample_bytes("glass"), "glass", {"glass": 0.9})]
    publish(registry, tiny_int8, "v1", golden=golden, aliases=["production"])
    publish(registry, tiny_int8, "v2", aliases=["canary"])

    manifest = registry.manifest()
    assert list(manifest.versions) == ["v1", "v2"]
    assert registry.resolve().version == "v1"  # production by default
    assert registry.resolve("canary").version == "v2"
    assert registry.resolve("v2").version == "v2"
    entry = registry.resolve("v1")
    assert entry.artifact.path == "artifacts/v1/model.tflite"
    assert entry.size == tiny_int8.stat().st_size
    assert registry.fetch_ref(entry.golden_set[0].image).read_bytes() == sample_bytes("glass")

    registry.promote("production", "v2", by="alice", reason="better")
    assert registry.resolve().version == "v2"
    assert registry.rollback("production", by="bob") == "v1"
    assert registry.resolve().version == "v1"

    events = [
        (a, e.action, e.from_version, e.to_version, e.by) for a, e in registry.history("production")
    ]
    assert events[1:] == [
        ("production", "promote", "v1", "v2", "alice"),
        ("production", "rollback", "v2", "v1", "bob"),
    ]
    with pytest.raises(RegistryError, match="no earlier version"):
        registry.rollback("production")

    # What was written parses back to the same thing.
    assert Manifest.parse(manifest.dumps()) == manifest


def test_promoting_to_the_current_version_is_a_no_op_that_rollback_skips(
    registry: Registry, tiny_int8: Path
):
    publish(registry, tiny_int8, "v1", aliases=["production"])
    publish(registry, tiny_int8, "v2", aliases=["production"])
    registry.promote("production", "v2")  # already there, e.g. after a publish moved it
    assert [e.to_version for _, e in registry.history("production")] == ["v1", "v2"]
    assert registry.rollback("production") == "v1"
    assert registry.resolve().version == "v1"

    # A manifest written before this rule may hold a v2 -> v2 event: rollback looks past it.
    def self_promote(manifest: Manifest) -> None:
        state = manifest.aliases["production"]
        state.version = "v2"
        state.history += [
            e.model_copy(update={"action": "promote", "from_version": frm, "to_version": "v2"})
            for e, frm in ((state.history[0], "v1"), (state.history[0], "v2"))
        ]

    registry.update(self_promote)
    assert registry.rollback("production") == "v1"


def test_classifier_loads_from_the_registry_uri(registry: Registry, tiny_int8: Path, tmp_path):
    publish(registry, tiny_int8, "v1", aliases=["production"])
    publish(registry, tiny_int8, "v2")
    uri = registry.uri
    if uri.startswith("s3://"):  # the classifier builds its own client; moto is still active
        assert Classifier.load(f"{uri}@v2", cache_dir=tmp_path / "c").version == "v2"
        assert Classifier.load(uri, cache_dir=tmp_path / "c").version == "v1"
    else:
        assert Classifier.load(f"{uri}@v2").version == "v2"


def test_published_versions_are_immutable(registry: Registry, tiny_int8: Path, tiny_models: Path):
    publish(registry, tiny_int8, "v1")
    with pytest.raises(VersionExistsError):
        publish(registry, tiny_models / "tiny_float.tflite", "v1")
    assert registry.resolve("v1").sha256 == registry.manifest().versions["v1"].sha256


def test_an_interrupted_publish_can_be_retried(tmp_path: Path, tiny_int8: Path, tiny_models: Path):
    registry = Registry.from_uri(tmp_path / "reg")
    # The artifact made it, the manifest did not (a crash in between).
    assert registry.store.put_new("artifacts/v1/model.tflite", tiny_int8)
    publish(registry, tiny_int8, "v1")  # same bytes: accepted
    assert registry.store.put_new("artifacts/v2/model.tflite", tiny_int8)
    with pytest.raises(VersionExistsError, match="immutable"):
        publish(registry, tiny_models / "tiny_float.tflite", "v2")  # other bytes: refused


def test_unknown_alias_or_version(registry: Registry, tiny_int8: Path):
    publish(registry, tiny_int8, "v1", aliases=["production"])
    with pytest.raises(ManifestError, match="neither an alias") as info:
        registry.resolve("v9")
    assert info.value.code == "unknown_version"
    with pytest.raises(ManifestError):
        registry.promote("production", "v9")


@pytest.mark.parametrize("name", ["prod/eu", "", "a..b", "canary.tflite"])
def test_a_name_no_model_uri_could_hold_is_refused_before_any_upload(
    registry: Registry, tiny_int8: Path, name: str
):
    with pytest.raises(ManifestError, match="use letters"):
        publish(registry, tiny_int8, "v1", aliases=[name])
    with pytest.raises(ManifestError, match="use letters"):
        publish(registry, tiny_int8, name or "-")
    # nothing was uploaded by the refused attempt: the artifact's key is still free
    assert registry.store.put_new("artifacts/v1/model.tflite", tiny_int8)
    publish(registry, tiny_int8, "v1")
    with pytest.raises(ManifestError, match="alias names use"):
        registry.promote(name, "v1")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models@production", ("models", "production")),
        ("s3://b/team@eu/models@v1", ("s3://b/team@eu/models", "v1")),
        ("s3://b/team@eu/models", ("s3://b/team@eu/models", None)),
        ("/opt/model@v2.tflite", ("/opt/model@v2.tflite", None)),  # a file, not a ref
        ("models@", ("models@", None)),
    ],
)
def test_split_ref(uri: str, expected: tuple[str, str | None]):
    assert split_ref(uri) == expected


def test_future_schema_is_refused_clearly(tmp_path: Path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99, "versions": {}}))
    with pytest.raises(UnsupportedSchemaError, match="schema_version 99 is not supported"):
        Registry.from_uri(tmp_path).manifest()


def test_tampered_artifact_is_refused(tmp_path: Path, tiny_int8: Path):
    registry = Registry.from_uri(tmp_path / "reg", cache_dir=tmp_path / "cache")
    publish(registry, tiny_int8, "v1", aliases=["production"])
    artifact = tmp_path / "reg" / "artifacts/v1/model.tflite"
    data = bytearray(artifact.read_bytes())
    data[100] ^= 0xFF
    artifact.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        Classifier.load(tmp_path / "reg")
    artifact.write_bytes(bytes(data[:-10]))
    with pytest.raises(IntegrityError, match="truncated"):
        Classifier.load(tmp_path / "reg")

    artifact.unlink()
    with pytest.raises(NotFoundError, match="missing"):
        Classifier.load(tmp_path / "reg")


def test_bad_download_is_deleted_and_never_cached(s3, tmp_path: Path, tiny_int8: Path):
    cache = tmp_path / "cache"
    registry = Registry(S3Store(f"s3://{BUCKET}/r", client=s3), cache_dir=cache)
    publish(registry, tiny_int8, "v1", aliases=["production"])
    s3.put_object(Bucket=BUCKET, Key="r/artifacts/v1/model.tflite", Body=b"truncated")
    with pytest.raises(IntegrityError):
        registry.fetch(registry.resolve())
    assert list(cache.iterdir()) == []  # no half file, no temp file left behind

    s3.put_object(Bucket=BUCKET, Key="r/artifacts/v1/model.tflite", Body=tiny_int8.read_bytes())
    path = registry.fetch(registry.resolve())
    assert path.read_bytes() == tiny_int8.read_bytes()
    path.write_bytes(b"corrupted on disk")  # a later reader re-downloads instead of trusting it
    assert registry.fetch(registry.resolve()).read_bytes() == tiny_int8.read_bytes()


def test_signatures(tmp_path: Path, tiny_int8: Path):
    private, public = generate_keypair()
    _, stranger = generate_keypair()
    registry = Registry.from_uri(tmp_path / "reg")
    publish(registry, tiny_int8, "signed", signing_key=private, aliases=["production"])
    publish(registry, tiny_int8, "unsigned", aliases=["canary"])

    entry = registry.resolve("signed")
    verify(entry, public)
    assert Classifier.load(tmp_path / "reg", public_key=public).version == "signed"
    with pytest.raises(SignatureError, match="does not match"):
        Classifier.load(tmp_path / "reg", public_key=stranger)
    with pytest.raises(SignatureError, match="not signed"):
        Classifier.load(f"{tmp_path / 'reg'}@canary", public_key=public)
    tampered = entry.model_copy(update={"uncertain_threshold": 0.9})
    with pytest.raises(SignatureError):
        verify(tampered, public)
    assert sign(tampered, private).signature != entry.signature


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_concurrent_promotes_lose_nothing(kind, tmp_path: Path, tiny_int8: Path, request):
    if kind == "s3":
        request.getfixturevalue("s3")
        # moto's in-process backend is not thread-safe within one request (two puts of a key
        # race on its buffer); real S3 applies each request atomically. Serialise single
        # requests, leaving the interleaving between requests (what CAS must survive) intact.
        from moto.core.botocore_stubber import BotocoreStubber

        lock = threading.Lock()
        original = BotocoreStubber.__call__

        def atomic(self, *args, **kwargs):
            with lock:
                return original(self, *args, **kwargs)

        request.getfixturevalue("monkeypatch").setattr(BotocoreStubber, "__call__", atomic)

        def make() -> Registry:  # a client per writer, as separate processes would have
            client = boto3.session.Session().client("s3", region_name="eu-west-1")
            return Registry(S3Store(f"s3://{BUCKET}/race", client=client))
    else:

        def make() -> Registry:
            return Registry.from_uri(tmp_path / "race")

    publish(make(), tiny_int8, "v1")
    publish(make(), tiny_int8, "v2")
    writers = 12
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def promote(i: int) -> None:
        registry = make()
        barrier.wait()
        try:
            for step in range(3):
                registry.promote(f"alias-{i}", "v1" if step % 2 == 0 else "v2", by=f"w{i}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    aliases = make().manifest().aliases
    assert sorted(aliases) == sorted(f"alias-{i}" for i in range(writers))
    assert all(len(state.history) == 3 for state in aliases.values())
    assert all(state.version == "v1" for state in aliases.values())


def test_registry_uri_schemes(tmp_path: Path):
    from wastesort.registry.http import HttpStore
    from wastesort.registry.local import LocalStore

    assert isinstance(Registry.from_uri(f"file://{tmp_path}").store, LocalStore)
    assert isinstance(Registry.from_uri(f"s3://{BUCKET}/p").store, S3Store)
    assert isinstance(Registry.from_uri("https://models.example.com/fleet").store, HttpStore)
    with pytest.raises(RegistryError, match="https only"):
        Registry.from_uri("http://models.example.com/fleet")


def test_http_registries_are_https_except_on_loopback():
    from wastesort.registry.http import HttpStore

    assert isinstance(Registry.from_uri("http://127.0.0.1:8080/fleet").store, HttpStore)
    with pytest.raises(RegistryError, match="https only"):
        Registry.from_uri("http://10.0.0.5/fleet")


def test_https_registry_refuses_a_redirect_to_http(tmp_path: Path):
    import httpx

    from wastesort.registry.http import HttpStore

    def serve(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "http://evil.example.com/manifest.json"})

    store = HttpStore("https://models.example.com/fleet")
    store._client = httpx.Client(  # the store's own hook, over a transport that opens nothing
        transport=httpx.MockTransport(serve),
        follow_redirects=True,
        event_hooks=store.client.event_hooks,
    )
    with pytest.raises(RegistryError, match="https only"):
        store.read_manifest()


def test_s3_without_credentials_is_a_registry_error(monkeypatch, tmp_path: Path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    client = boto3.session.Session().client("s3", region_name="eu-west-1")
    with pytest.raises(RegistryError, match="cannot read"):
        Registry(S3Store("s3://wastesort-nowhere/p", client=client)).manifest()


def test_golden_images_with_the_same_name_and_bad_version_ids(tmp_path: Path, tiny_int8: Path):
    registry = Registry.from_uri(tmp_path / "reg")
    golden = [
        GoldenSample("glass/IMG_1.jpg", sample_bytes("glass"), "glass"),
        GoldenSample("metal/IMG_1.jpg", sample_bytes("metal"), "metal"),
    ]
    publish(registry, tiny_int8, "v1", golden=golden)
    items = registry.resolve("v1").golden_set
    assert [registry.fetch_ref(i.image).read_bytes() for i in items] == [g.data for g in golden]
    with pytest.raises(ManifestError, match="version ids"):
        publish(registry, tiny_int8, "../escape")
    assert not (tmp_path / "escape").exists()
    assert sorted(p.name for p in (tmp_path / "reg" / "artifacts").iterdir()) == ["v1"]


def test_promote_keeps_the_manifests_mode(tmp_path: Path, tiny_int8: Path):
    """A shared or web-served registry stays readable: rewrites keep the file's mode, and a
    new manifest gets the umask's mode, not mkstemp's 0600."""
    old = os.umask(0o022)
    try:
        registry = Registry.from_uri(tmp_path / "reg")
        publish(registry, tiny_int8, "v1", aliases=["production"])
        manifest = tmp_path / "reg" / "manifest.json"
        assert manifest.stat().st_mode & 0o777 == 0o644
        publish(registry, tiny_int8, "v2")
        manifest.chmod(0o640)
        registry.promote("production", "v2")
        assert manifest.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
