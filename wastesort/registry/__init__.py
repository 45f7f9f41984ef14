"""The model registry: immutable artifacts plus one manifest, in a folder or on S3."""

from wastesort.registry.local import write_atomic
from wastesort.registry.registry import (
    GoldenSample,
    Registry,
    default_cache_dir,
    sha256_file,
    verify_bytes,
)
from wastesort.registry.store import RegistryStore

__all__ = [
    "GoldenSample",
    "Registry",
    "RegistryStore",
    "default_cache_dir",
    "sha256_file",
    "verify_bytes",
    "write_atomic",
]
