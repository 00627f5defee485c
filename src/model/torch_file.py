"""Read a legacy (pre-zip) PyTorch state_dict file with numpy and a restricted unpickler: no torch, no stranger's code.

The legacy layout (torch.serialization._legacy_save): pickled magic number, protocol version and sys info; the
pickled state_dict, whose tensors refer to storages by persistent id; the pickled list of storage keys; then each
storage in that order as an int64 element count followed by its raw little-endian data.
"""
from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class UnsafePickle(pickle.UnpicklingError):
    """The file names a class or function outside the allow-list: refused before anything runs."""


class _Storage:
    """A storage named by the pickle; its bytes come later in the file."""

    def __init__(self, dtype: type, numel: int):
        self.dtype, self.numel, self.data = np.dtype(dtype), numel, None


class _TensorRef:
    """What _rebuild_tensor_v2 returns while unpickling: a view (offset, size, stride) of a storage."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple, *_):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self) -> np.ndarray:
        """The tensor as a C-contiguous copy; honours strides (a transposed TF array is not contiguous)."""
        data = self.storage.data
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(data[self.offset:], shape=self.size,
                                               strides=tuple(s * item for s in self.stride), writeable=False)
        return np.ascontiguousarray(view)


def _storage_class(name: str):
    def marker():
        return name
    marker.storage_name = name
    return marker


class _Unpickler(pickle.Unpickler):
    """Allows only OrderedDict, the tensor-rebuild function and the *Storage classes."""

    def __init__(self, f: BinaryIO, storages: dict):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _TensorRef
        if module == "torch" and name in STORAGE_DTYPES:
            return _storage_class(name)
        raise UnsafePickle(f"refusing to load {module}.{name}: only tensors and OrderedDict are allowed")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel, *_ = pid
        if kind != "storage":
            raise UnsafePickle(f"unexpected persistent id {kind!r}")
        name = getattr(storage_type, "storage_name", None)
        if name is None:
            raise UnsafePickle(f"unexpected storage type {storage_type!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(STORAGE_DTYPES[name], int(numel))
        return self.storages[key]


def _load(f: BinaryIO, storages: dict | None = None):
    return _Unpickler(f, {} if storages is None else storages).load()


def read_state_dict(path: Path | str) -> dict[str, np.ndarray]:
    """name -> float32/int numpy array, in the file's order."""
    with open(path, "rb") as f:
        if _load(f) != MAGIC:
            raise ValueError(f"{path} is not a legacy PyTorch file (wrong magic number; zip files are not supported)")
        _load(f)  # protocol version
        _load(f)  # sys info: byte order, type sizes
        storages: dict[str, _Storage] = {}
        state = _load(f, storages)
        for key in _load(f):
            storage = storages[key]
            count = int(np.frombuffer(f.read(8), "<i8")[0])
            raw = f.read(count * storage.dtype.itemsize)
            if count != storage.numel or len(raw) != count * storage.dtype.itemsize:
                raise ValueError(f"{path}: storage {key} is truncated or inconsistent")
            storage.data = np.frombuffer(raw, storage.dtype.newbyteorder("<"))
    if not isinstance(state, OrderedDict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state_dict")
    return OrderedDict((name, ref.array()) for name, ref in state.items())
