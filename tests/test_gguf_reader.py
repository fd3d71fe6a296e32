"""``read_gguf`` equals ``gguf.GGUFReader`` (llama.cpp's reader, the reference) on every field
and tensor: a file written here with every metadata type, and the packaged SmolLM2 GGUF."""

import numpy as np
import pytest

from resrank_jax.hf.config_map import UnsupportedModelError
from resrank_jax.hf.gguf_reader import read_gguf
from resrank_jax.hf.packaged import packaged_weights

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType


def assert_same_as_gguf_reader(path) -> None:
    ours, ref = read_gguf(path), gguf.GGUFReader(str(path))
    ref_fields = {k: f.contents() for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    assert list(ours.fields) == list(ref_fields)
    for key, value in ref_fields.items():
        assert ours.fields[key] == value, key
        assert type(ours.fields[key]) is type(value), key
        if isinstance(value, list):
            assert [type(v) for v in ours.fields[key]] == [type(v) for v in value], key
    assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
    for a, b in zip(ours.tensors, ref.tensors, strict=True):
        assert a.tensor_type == b.tensor_type and a.shape == tuple(b.shape.tolist()), a.name
        assert a.data.dtype == b.data.dtype and a.data.shape == b.data.shape, a.name
        np.testing.assert_array_equal(a.data, b.data, err_msg=a.name)


def write_every_type(path, alignment: int) -> dict[str, np.ndarray]:
    """Writes a GGUF with every metadata type and three tensor kinds; returns the tensors."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_custom_alignment(alignment)
    for i, kind in enumerate(("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64")):
        getattr(writer, f"add_{kind}")(f"test.{kind}", 7 + i if "u" in kind else -3 - i)
    writer.add_int64("test.int64", -(2**40))
    writer.add_float32("test.float32", 0.1)
    writer.add_float64("test.float64", 0.1)
    writer.add_bool("test.bool", True)
    writer.add_string("test.string", "héllo ▁wörld")
    writer.add_array("test.strings", ["a", "", "ü" * 300, "<|im_end|>"])
    writer.add_array("test.ints", [1, -2, 3])
    writer.add_array("test.floats", [0.5, -1.25])
    writer.add_array("test.bools", [True, False])
    rng = np.random.default_rng(0)
    tensors = {
        "f32": rng.normal(size=(3, 5)).astype(np.float32),
        "f16": rng.normal(size=(2, 4, 6)).astype(np.float16),
        "q8_0": gguf.quants.quantize(rng.normal(size=(4, 64)).astype(np.float32), Q.Q8_0),
    }
    for name, array in tensors.items():
        qtype = Q.Q8_0 if name == "q8_0" else None
        writer.add_tensor(name, array, raw_shape=array.shape if qtype else None, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors


@pytest.mark.parametrize("alignment", [32, 256])  # the header here ends off a 256 boundary
def test_every_metadata_type_and_tensor_kind_reads_as_gguf_reader_reads_it(tmp_path, alignment):
    path = tmp_path / "every.gguf"
    written = write_every_type(path, alignment)
    assert_same_as_gguf_reader(path)
    contents = read_gguf(path)
    assert contents.fields["test.string"] == "héllo ▁wörld"
    assert contents.fields["test.int64"] == -(2**40)
    for tensor in contents.tensors:
        np.testing.assert_array_equal(tensor.data, written[tensor.name], err_msg=tensor.name)
    q8 = next(t for t in contents.tensors if t.name == "q8_0")
    assert q8.shape == (64, 4)  # GGUF order: the row length first


def test_packaged_smollm2_gguf_reads_as_gguf_reader_reads_it():
    assert_same_as_gguf_reader(packaged_weights("smollm2-135m-instruct"))


@pytest.mark.parametrize(
    "header, message",
    [
        (b"PK\x03\x04" + bytes(4), r"model\.gguf: not a GGUF file"),
        (b"GGUF" + (3 << 24).to_bytes(4, "little"), r"model\.gguf: big-endian GGUF files"),
        (b"GGUF" + (1).to_bytes(4, "little"), r"model\.gguf: GGUF version 1 is not supported"),
    ],
)
def test_a_file_that_is_not_readable_gguf_is_refused_with_its_path(tmp_path, header, message):
    path = tmp_path / "model.gguf"
    path.write_bytes(header + bytes(56))
    with pytest.raises(UnsupportedModelError, match=message):
        read_gguf(path)


def test_a_metadata_key_written_twice_is_refused(tmp_path):
    import struct

    def uint32_field(key: bytes, value: int) -> bytes:
        return struct.pack("<Q", len(key)) + key + struct.pack("<II", 4, value)  # 4: UINT32

    path = tmp_path / "twice.gguf"
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 2)
    path.write_bytes(header + uint32_field(b"a.b", 1) + uint32_field(b"a.b", 2) + bytes(32))
    with pytest.raises(UnsupportedModelError, match=r"twice\.gguf: metadata key 'a\.b' appears"):
        read_gguf(path)


def test_a_truncated_file_is_refused_in_one_line(tmp_path):
    whole = tmp_path / "whole.gguf"
    write_every_type(whole, 32)
    for cut in (40, whole.stat().st_size - 40):  # in the metadata; in the last tensor (272 B)
        path = tmp_path / f"cut{cut}.gguf"
        path.write_bytes(whole.read_bytes()[:cut])
        with pytest.raises(UnsupportedModelError, match=rf"cut{cut}\.gguf: truncated or corrupt"):
            read_gguf(path)
