"""Strict key map, refusal to unpickle, hub-id resolution and export round trips."""

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from resrank_jax import export_hf, load_backbone
from resrank_jax.hf.tensors import CheckpointKeyError
from tests.hf_reference import hf_forward, make_tiny_hf, padded_batch

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("qwen3")
    make_tiny_hf("qwen3", out, tie=True)
    return out


def _copy_with_tensors(src, dst, edit):
    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


def test_missing_tensor_is_named(qwen3_dir, tmp_path):
    bad = _copy_with_tensors(
        qwen3_dir, tmp_path / "bad", lambda t: t.pop("model.layers.1.self_attn.k_norm.weight")
    )
    with pytest.raises(
        CheckpointKeyError, match=r"missing tensors \['model.layers.1.self_attn.k_norm.weight'\]"
    ):
        load_backbone(bad)


def test_extra_tensor_is_named(qwen3_dir, tmp_path):
    def add(t):
        t["model.layers.0.mlp.extra_proj.weight"] = np.zeros((2, 2), np.float32)

    bad = _copy_with_tensors(qwen3_dir, tmp_path / "bad", add)
    with pytest.raises(
        CheckpointKeyError, match=r"unexpected tensors \['model.layers.0.mlp.extra_proj.weight'\]"
    ):
        load_backbone(bad)


def test_wrong_shape_is_named(qwen3_dir, tmp_path):
    def shrink(t):
        t["model.norm.weight"] = t["model.norm.weight"][:10]

    bad = _copy_with_tensors(qwen3_dir, tmp_path / "bad", shrink)
    with pytest.raises(ValueError, match=r"norm/weight: shape \(10,\)"):
        load_backbone(bad)


def test_pickle_only_directory_is_refused(qwen3_dir, tmp_path):
    bad = tmp_path / "pickled"
    bad.mkdir()
    shutil.copy(qwen3_dir / "config.json", bad / "config.json")
    (bad / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match="never unpickles"):
        load_backbone(bad)


def test_unsupported_architecture_is_named(qwen3_dir, tmp_path):
    bad = tmp_path / "mistery"
    shutil.copytree(qwen3_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model_type"] = "gpt_neox"
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="'gpt_neox' is not supported"):
        load_backbone(bad)


def test_sharded_safetensors_directory_loads(qwen3_dir, tmp_path):
    sharded = tmp_path / "sharded"
    shutil.copytree(qwen3_dir, sharded)
    tensors = load_file(str(sharded / "model.safetensors"))
    (sharded / "model.safetensors").unlink()
    names = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((names[::2], names[1::2])):
        fname = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: tensors[k] for k in part}, str(sharded / fname))
        weight_map.update(dict.fromkeys(part, fname))
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    ids, mask = padded_batch(97, [6, 3], "left")
    a, _ = load_backbone(qwen3_dir)
    b, _ = load_backbone(sharded)
    np.testing.assert_array_equal(
        np.asarray(a(jnp.asarray(ids), attention_mask_bl=jnp.asarray(mask))),
        np.asarray(b(jnp.asarray(ids), attention_mask_bl=jnp.asarray(mask))),
    )


def test_hub_id_resolves_through_the_offline_cache(qwen3_dir, tmp_path, monkeypatch):
    """The hub path is real: huggingface_hub resolves the id from its cache when offline."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--acme--tiny-qwen3" / "snapshots" / ("a" * 40)
    shutil.copytree(qwen3_dir, snapshot)
    (cache / "models--acme--tiny-qwen3" / "refs").mkdir()
    (cache / "models--acme--tiny-qwen3" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    model, _ = load_backbone("acme/tiny-qwen3")
    assert model.cfg.num_layers == 2
    with pytest.raises(FileNotFoundError, match="could not be fetched from the HF hub"):
        load_backbone("acme/not-cached")


@pytest.mark.parametrize(
    ("family", "tie"),
    [("qwen3", True), ("qwen2", True), ("llama", False), ("mistral", False), ("gemma3", True)],
)
def test_export_round_trip_through_transformers(family, tie, tmp_path):
    import transformers

    make_tiny_hf(family, tmp_path / "src", tie=tie, seed=3)
    model, _ = load_backbone(tmp_path / "src")
    export_hf(model, tmp_path / "exported")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "exported").eval()
    ids, mask = padded_batch(97, [9, 2], "right", seed=4)  # longer than the sliding window
    ref_h, ref_logits = hf_forward(reloaded, ids, mask)
    h, logits = model(jnp.asarray(ids), attention_mask_bl=jnp.asarray(mask), return_logits=True)
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(h)[real], ref_h[real], atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(logits)[real], ref_logits[real], atol=1e-4, rtol=0)
    again, _ = load_backbone(tmp_path / "exported")
    np.testing.assert_array_equal(
        np.asarray(again(jnp.asarray(ids), attention_mask_bl=jnp.asarray(mask))), np.asarray(h)
    )


def test_gguf_with_llama3_rope_scaling_is_refused_by_name(tmp_path):
    import gguf

    from resrank_jax.hf.config_map import UnsupportedModelError
    from resrank_jax.hf.gguf_file import GGUFFile

    path = tmp_path / "llama3.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_rope_freq_base(500000.0)
    writer.add_tensor("rope_freqs.weight", np.ones(8, np.float32))
    writer.add_tensor("token_embd.weight", np.zeros((16, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedModelError, match=r"RoPE scaling \(rope_freqs tensor\)"):
        GGUFFile(path)
