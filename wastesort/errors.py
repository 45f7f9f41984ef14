"""One typed error family, each kind with a stable `code`.

The API maps `code` to an HTTP status and a problem `type`, the CLI prints the message; both
rely on the codes never changing.
"""

from __future__ import annotations


class WastesortError(Exception):
    """Base of every error wastesort raises on purpose."""

    code = "wastesort_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


# --- input images: the caller's fault (HTTP 4xx) ---------------------------------------------


class ImageError(WastesortError):
    code = "invalid_image"


class EmptyImageError(ImageError):
    code = "empty_image"


class UnsupportedFormatError(ImageError):
    code = "unsupported_format"


class CorruptImageError(ImageError):
    code = "corrupt_image"


class TooManyPixelsError(ImageError):
    code = "too_many_pixels"


# --- models and the registry -----------------------------------------------------------------


class ModelError(WastesortError):
    code = "model_error"


class ManifestError(ModelError):
    code = "manifest_invalid"


class UnsupportedSchemaError(ManifestError):
    code = "unsupported_schema"


class IntegrityError(ModelError):
    """An artifact's bytes do not match the sha256/size the manifest records."""

    code = "integrity_error"


class SignatureError(IntegrityError):
    code = "bad_signature"


class RegistryError(WastesortError):
    code = "registry_error"


class VersionExistsError(RegistryError):
    code = "version_exists"


class ConcurrentUpdateError(RegistryError):
    """Another writer changed the manifest first; the caller re-reads and retries."""

    code = "concurrent_update"


class NotFoundError(RegistryError):
    code = "not_found"


class NotSupportedError(RegistryError):
    """The store cannot do this at all (an HTTP registry cannot list or write)."""

    code = "not_supported"
