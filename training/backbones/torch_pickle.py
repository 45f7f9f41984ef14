"""Read a legacy (non-zip) PyTorch `.pth` state dict into numpy arrays, without PyTorch.

A legacy `.pth` is five pickles in a row (magic number, protocol version, system info, the
state dict, the list of storage keys) followed by the raw storages, each an int64 element
count and then little-endian data. Tensors in the state dict are `_rebuild_tensor_v2` calls
over storages named by `persistent_load`. A pickle can run arbitrary code, so the unpickler
below resolves only the handful of globals such a file needs to stand-in objects and refuses
every other global: a hostile file fails with `UnsafePickleError` instead of running code.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """The file asks for a global outside the allow-list, or is not a legacy `.pth`."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return _STORAGE_DTYPES[self.name]


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def materialize(self) -> np.ndarray:
        if self.storage.data is None:
            raise UnsafePickleError(f"storage {self.storage.key} was never read")
        flat = self.storage.data
        itemsize = flat.dtype.itemsize
        if not self.shape:
            return np.array(flat[self.offset])
        span = sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True))
        needed = self.offset + span + 1
        if needed > flat.size:
            raise UnsafePickleError(f"tensor over storage {self.storage.key} runs past its end")
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.shape,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(  # noqa: PLR0917 (the pickle calls it positionally)
    storage: _Storage,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _TensorRef:
    del requires_grad, backward_hooks, metadata
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: _TensorRef, requires_grad: bool, backward_hooks: Any) -> _TensorRef:
    del requires_grad, backward_hooks
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: not a plain tensor state dict"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and len(pid) >= 5):
            raise UnsafePickleError(f"unsupported persistent id {pid!r:.80}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError("persistent id does not name a storage type")
        if len(pid) > 5 and pid[5] is not None:
            raise UnsafePickleError("storage views are not supported")
        key = str(key)
        if key not in self._storages:
            self._storages[key] = _Storage(key, storage_type.dtype, int(numel))
        return self._storages[key]


class _SafeUnpickler(pickle.Unpickler):
    """For the header pickles and the key list, which hold only plain data."""

    def find_class(self, module: str, name: str) -> Any:
        raise UnsafePickleError(f"refusing to load global {module}.{name} in a header pickle")


def load_state_dict(source: str | Path | bytes) -> dict[str, np.ndarray]:
    """Return the tensors of a legacy PyTorch `.pth` file as numpy arrays, by name.

    Args:
        source: a path to the file, or its bytes.

    Returns:
        An ordered mapping from parameter name to a contiguous numpy array.

    Raises:
        UnsafePickleError: the file is not a legacy `.pth` state dict, or asks for anything
            outside the allow-list (which is how a malicious pickle would try to run code).
    """
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    f = io.BytesIO(raw)
    try:
        magic = _SafeUnpickler(f).load()
        if magic != LEGACY_MAGIC:
            raise UnsafePickleError("not a legacy PyTorch file (bad magic number)")
        _SafeUnpickler(f).load()  # protocol version
        sys_info = _SafeUnpickler(f).load()
        if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
            raise UnsafePickleError("big-endian .pth files are not supported")
        storages: dict[str, _Storage] = {}
        state = _RestrictedUnpickler(f, storages).load()
        keys = _SafeUnpickler(f).load()
    except (EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise UnsafePickleError(f"malformed .pth file: {exc}") from exc
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise UnsafePickleError(f"storage {key} listed but never referenced")
        count = np.frombuffer(f.read(8), dtype="<i8")
        if count.size != 1 or int(count[0]) != storage.numel:
            raise UnsafePickleError(f"storage {key}: size header does not match")
        nbytes = storage.numel * storage.dtype.itemsize
        buf = f.read(nbytes)
        if len(buf) != nbytes:
            raise UnsafePickleError(f"storage {key}: file truncated")
        storage.data = np.frombuffer(buf, dtype=storage.dtype)
    if not isinstance(state, dict):
        raise UnsafePickleError("the file does not hold a state dict")
    out: dict[str, np.ndarray] = OrderedDict()
    for name, value in state.items():
        if not isinstance(value, _TensorRef):
            raise UnsafePickleError(f"entry {name!r} is not a tensor")
        out[str(name)] = value.materialize()
    return out
