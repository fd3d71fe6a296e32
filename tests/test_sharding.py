"""Sharding on 8 fake CPU devices: mesh construction, param placement by the rules table,
and sharded forward == single-device forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from resrank_jax import init_backbone, load_backbone, make_mesh
from resrank_jax.models.build import flat_params
from resrank_jax.models.config import DecoderConfig
from resrank_jax.sharding import fit_sharding, logical_to_spec
from tests.hf_reference import make_tiny_hf, padded_batch
from tests.tiny_models import TINY_GEMMA3


def test_eight_fake_devices():
    assert jax.device_count() == 8


@pytest.mark.parametrize(
    ("shape", "message"),
    [((3, 1, -1), "does not divide"), ((2, 2, 1), "needs 4 devices"), ((-1, -1, 2), "at most one")],
)
def test_bad_mesh_shapes_fail_with_reason(shape, message):
    with pytest.raises(ValueError, match=message):
        make_mesh(shape)


def test_mesh_fills_minus_one():
    assert dict(make_mesh((-1, 2, 2)).shape) == {"data": 2, "fsdp": 2, "tensor": 2}


def test_fit_sharding_replicates_only_indivisible_dims():
    mesh = make_mesh((2, 2, 2))
    sharding = NamedSharding(mesh, P("tensor", "fsdp"))
    assert fit_sharding(sharding, (97, 64)).spec == P(None, "fsdp")
    assert fit_sharding(sharding, (96, 64)).spec == P("tensor", "fsdp")
    batch = NamedSharding(mesh, P(("data", "fsdp")))
    assert fit_sharding(batch, (6,)).spec == P("data")


def test_unknown_logical_name_is_an_error():
    with pytest.raises(KeyError, match="'mystery'"):
        logical_to_spec(("embed", "mystery"))


@pytest.mark.torch
def test_params_follow_rules_and_sharded_forward_matches(tmp_path):
    make_tiny_hf("qwen3", tmp_path, tie=False, seed=5)
    mesh = make_mesh((2, 2, 2))
    single, _ = load_backbone(tmp_path)
    sharded, _ = load_backbone(tmp_path, mesh=mesh)
    params = flat_params(sharded)
    expected = {
        ("layers", 0, "self_attn", "q_proj", "kernel"): P("fsdp", "tensor"),
        ("layers", 0, "self_attn", "o_proj", "kernel"): P("tensor", "fsdp"),
        ("layers", 1, "mlp", "down_proj", "kernel"): P("tensor", "fsdp"),
        ("layers", 1, "self_attn", "q_norm", "weight"): P(None),
        ("embed_tokens", "embedding"): P(None, "fsdp"),  # vocab 97 is not divisible by 2
        ("lm_head", "kernel"): P("fsdp", None),
    }
    for path, spec in expected.items():
        sharding = params[path].sharding
        assert isinstance(sharding, NamedSharding) and sharding.mesh.shape == mesh.shape
        assert sharding.spec == spec or tuple(sharding.spec) == tuple(spec) + (None,) * (
            len(sharding.spec) - len(spec)
        ), (path, sharding.spec)
    ids, mask = padded_batch(97, [9, 5, 1, 7, 3, 2, 8, 4], "left")
    batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))
    h_sharded, logits_sharded = jax.jit(
        lambda m, i, k: m(i, attention_mask_bl=k, return_logits=True)
    )(sharded, jax.device_put(ids, batch_sharding), jax.device_put(mask, batch_sharding))
    h, logits = single(jnp.asarray(ids), attention_mask_bl=jnp.asarray(mask), return_logits=True)
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(h_sharded)[real], np.asarray(h)[real], atol=1e-5, rtol=0)
    np.testing.assert_allclose(
        np.asarray(logits_sharded)[real], np.asarray(logits)[real], atol=1e-5, rtol=0
    )


def test_init_backbone_is_born_sharded():
    cfg = DecoderConfig(
        family="llama",
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_layers=1,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
    )
    model = init_backbone(cfg, mesh=make_mesh((2, 2, 2)))
    kernel = model.layers[0].mlp.up_proj.kernel[...]
    assert kernel.sharding.spec == P("fsdp", "tensor")
    assert {s.data.shape for s in kernel.addressable_shards} == {(16, 32)}


def test_every_parameter_carries_logical_axes():
    from flax import nnx

    from resrank_jax.models.config import ResRankConfig
    from resrank_jax.sharding import LOGICAL_AXIS_RULES
    from tests.tiny_models import tiny_resrank

    known = {name for name, _ in LOGICAL_AXIS_RULES}
    for model in (
        tiny_resrank(ResRankConfig(phi="mlp", residual="alpha"), bert_encoder=True),
        tiny_resrank(ResRankConfig(phi="scale")),
        init_backbone(
            DecoderConfig(
                family="qwen2",
                vocab_size=64,
                hidden_size=32,
                intermediate_size=64,
                num_layers=1,
                num_heads=4,
                num_kv_heads=2,
                head_dim=8,
                qkv_bias=True,
                tie_word_embeddings=False,
            )
        ),
        init_backbone(TINY_GEMMA3),  # four norms per layer
        init_backbone(TINY_GEMMA3.replace(scan_layers=True)),
    ):
        for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
            names = var.get_metadata().get("out_sharding")
            assert names is not None and len(names) == var.ndim, (path, names)
            assert set(names) <= known, (path, names)
