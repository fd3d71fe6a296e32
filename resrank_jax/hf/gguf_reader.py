"""A GGUF file's metadata and tensor table, read in one pass (GGUF v2/v3, little-endian).

``gguf.GGUFReader`` (llama.cpp's maintained reader) builds a numpy memmap view per element of
every metadata array: 7.1 s for SmolLM2's 49k-token vocabulary and 29.6 s for Gemma 3's 262k
tokens, paid at every train/eval/rerank start; this reader takes 0.21 s and 0.66 s
(``benchmarks/gguf_load.py``). This reader decodes the same bytes with
``struct`` and ``np.frombuffer`` (string arrays in one loop, number arrays in one call) and
keeps ``gguf``'s constants and quantisation tables; tensor data stay lazy memmap slices that
``gguf.quants.dequantize`` reads. ``tests/test_gguf_reader.py`` pins equality with
``gguf.GGUFReader`` field by field and tensor by tensor.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from gguf.constants import (
    GGML_QUANT_SIZES,
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGMLQuantizationType,
    GGUFValueType,
)
from gguf.quants import quant_shape_to_byte_shape

from resrank_jax.hf.config_map import UnsupportedModelError

_NUMBER_DTYPES = {
    GGUFValueType.UINT8: np.dtype("<u1"),
    GGUFValueType.INT8: np.dtype("<i1"),
    GGUFValueType.UINT16: np.dtype("<u2"),
    GGUFValueType.INT16: np.dtype("<i2"),
    GGUFValueType.UINT32: np.dtype("<u4"),
    GGUFValueType.INT32: np.dtype("<i4"),
    GGUFValueType.FLOAT32: np.dtype("<f4"),
    GGUFValueType.BOOL: np.dtype("?"),
    GGUFValueType.UINT64: np.dtype("<u8"),
    GGUFValueType.INT64: np.dtype("<i8"),
    GGUFValueType.FLOAT64: np.dtype("<f8"),
}
# Unquantised tensor types: element dtype (the others are raw bytes per row).
_PLAIN_TENSOR_DTYPES = {
    GGMLQuantizationType.F32: np.float32,
    GGMLQuantizationType.F16: np.float16,
    GGMLQuantizationType.F64: np.float64,
    GGMLQuantizationType.I8: np.int8,
    GGMLQuantizationType.I16: np.int16,
    GGMLQuantizationType.I32: np.int32,
    GGMLQuantizationType.I64: np.int64,
}


class GGUFTensorInfo(NamedTuple):
    """One tensor: GGUF ``shape`` (innermost dimension first, as the file stores it) and
    ``data`` as ``gguf.GGUFReader`` gives it (elements, or bytes per row when quantised)."""

    name: str
    tensor_type: GGMLQuantizationType
    shape: tuple[int, ...]
    data: np.ndarray


class GGUFContents(NamedTuple):
    """``fields``: metadata key -> value (str, int, float, bool, or a list of them);
    ``tensors``: the tensor table in file order."""

    fields: dict[str, Any]
    tensors: list[GGUFTensorInfo]


class _Cursor:
    """Reads little-endian values from a buffer, advancing an offset."""

    def __init__(self, buf: memoryview, path: Path) -> None:
        self.buf, self.offset, self.path = buf, 0, path

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.buf, self.offset)[0]
        self.offset += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        start, self.offset = self.offset, self.offset + n
        return str(self.buf[start : self.offset], "utf-8")

    def value(self, vtype: GGUFValueType) -> Any:
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype == GGUFValueType.ARRAY:
            return self.array()
        dtype = _NUMBER_DTYPES[vtype]
        return self.numbers(dtype, 1)[0]

    def numbers(self, dtype: np.dtype, count: int) -> list[Any]:
        array = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.offset)
        self.offset += dtype.itemsize * count
        return array.tolist()

    def array(self) -> list[Any]:
        item_type, count = GGUFValueType(self.unpack("<I")), self.unpack("<Q")
        if item_type == GGUFValueType.STRING:
            return [self.string() for _ in range(count)]
        if item_type == GGUFValueType.ARRAY:
            raise UnsupportedModelError(f"{self.path}: nested GGUF metadata arrays are not read")
        return self.numbers(_NUMBER_DTYPES[item_type], count)


def read_gguf(path: str | Path) -> GGUFContents:
    """Metadata and tensor table of a GGUF file; tensor data are memmap views (no copy). A
    file that ends early or holds an unknown type code is refused in one line."""
    path = Path(path)
    data = np.memmap(path, mode="r")
    try:
        return _parse(data, path)
    except (struct.error, ValueError) as err:
        raise UnsupportedModelError(f"{path}: truncated or corrupt GGUF file ({err})") from None


def _parse(data: np.memmap, path: Path) -> GGUFContents:
    cur = _Cursor(memoryview(data), path)
    if len(data) < 24 or cur.unpack("<I") != GGUF_MAGIC:
        raise UnsupportedModelError(f"{path}: not a GGUF file (bad magic)")
    version = cur.unpack("<I")
    if version & 0xFFFF == 0:
        raise UnsupportedModelError(f"{path}: big-endian GGUF files are not supported")
    if version not in (2, 3):
        raise UnsupportedModelError(f"{path}: GGUF version {version} is not supported (2, 3)")
    n_tensors, n_fields = cur.unpack("<Q"), cur.unpack("<Q")
    fields = {}
    for _ in range(n_fields):
        key = cur.string()
        if key in fields:
            raise UnsupportedModelError(f"{path}: metadata key {key!r} appears twice")
        fields[key] = cur.value(GGUFValueType(cur.unpack("<I")))
    table = [_tensor_entry(cur) for _ in range(n_tensors)]
    alignment = int(fields.get("general.alignment", GGUF_DEFAULT_ALIGNMENT))
    start = -(-cur.offset // alignment) * alignment
    return GGUFContents(fields, [_tensor(data, start, *entry) for entry in table])


def _tensor_entry(cur: _Cursor) -> tuple[str, tuple[int, ...], GGMLQuantizationType, int]:
    """``(name, GGUF shape, type, offset from the data section)`` of one tensor-table row."""
    name = cur.string()
    shape = tuple(cur.numbers(np.dtype("<u8"), cur.unpack("<I")))
    return name, shape, GGMLQuantizationType(cur.unpack("<I")), cur.unpack("<Q")


def _tensor(data: np.memmap, start: int, name, shape, qtype, offset) -> GGUFTensorInfo:
    """A tensor's view into the file: numpy order (outermost first), raw bytes per row when
    quantised."""
    n = int(np.prod(shape, dtype=np.int64))
    dims = tuple(reversed(shape))
    dtype = _PLAIN_TENSOR_DTYPES.get(qtype)
    if dtype is None:
        block, type_size = GGML_QUANT_SIZES[qtype]
        dtype, n, dims = np.uint8, n * type_size // block, quant_shape_to_byte_shape(dims, qtype)
    view = np.frombuffer(data, dtype=dtype, count=n, offset=start + offset)
    return GGUFTensorInfo(name, qtype, shape, view.reshape(dims))
