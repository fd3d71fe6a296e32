"""Create backbones already sharded: from scratch (random init) or from a flat weight dict."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from resrank_jax.models.bert import Bert
from resrank_jax.models.config import BackboneConfig, BertConfig
from resrank_jax.models.decoder import Decoder
from resrank_jax.sharding import LOGICAL_AXIS_RULES, make_mesh

Backbone = Decoder | Bert


def backbone_class(cfg: BackboneConfig) -> type[Backbone]:
    return Bert if isinstance(cfg, BertConfig) else Decoder


def default_mesh(mesh: Mesh | None) -> Mesh:
    """The given mesh, or a 1x1x1 mesh on the first device."""
    return mesh if mesh is not None else make_mesh((1, 1, 1), jax.devices()[:1])


def init_backbone(cfg: BackboneConfig, *, mesh: Mesh | None = None, seed: int = 0) -> Backbone:
    """A randomly initialised backbone whose params are born sharded on ``mesh``."""
    mesh = default_mesh(mesh)
    cls = backbone_class(cfg)
    with jax.set_mesh(mesh), nnx.logical_axis_rules(LOGICAL_AXIS_RULES):
        return cls(cfg, rngs=nnx.Rngs(seed))


def abstract_backbone(cfg: BackboneConfig, mesh: Mesh | None = None) -> Backbone:
    """Shapes, dtypes and shardings of a backbone without allocating its params."""
    mesh = default_mesh(mesh)
    cls = backbone_class(cfg)
    with jax.set_mesh(mesh), nnx.logical_axis_rules(LOGICAL_AXIS_RULES):
        return nnx.eval_shape(lambda: cls(cfg, rngs=nnx.Rngs(0)))


def param_count(cfg: BackboneConfig) -> int:
    """Number of parameters, from ``eval_shape`` (no memory allocated)."""
    state = nnx.state(abstract_backbone(cfg), nnx.Param)
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(state))


def backbone_from_arrays(
    cfg: BackboneConfig,
    get_array: Callable[[tuple], np.ndarray],
    *,
    mesh: Mesh | None = None,
) -> Backbone:
    """Builds a backbone whose every param comes from ``get_array(path)``, placed on ``mesh``.

    ``get_array`` receives the NNX state path (e.g. ``("layers", 0, "mlp", "up_proj",
    "kernel")``) and returns a host array of the param's shape; it is called once per param,
    so a checkpoint is streamed tensor by tensor instead of held twice in memory.
    """
    mesh = default_mesh(mesh)
    abstract = abstract_backbone(cfg, mesh)
    graphdef, state = nnx.split(abstract)
    with jax.set_mesh(mesh), nnx.logical_axis_rules(LOGICAL_AXIS_RULES):
        shardings = nnx.get_named_sharding(state, mesh)
    flat_state = dict(nnx.to_flat_state(state))
    flat_shardings = dict(nnx.to_flat_state(shardings))
    values: dict[tuple, jax.Array] = {}
    for path, var in flat_state.items():
        array = np.asarray(get_array(path))
        if array.shape != tuple(var.shape):
            raise ValueError(f"param {'/'.join(map(str, path))}: shape {array.shape}, expected {var.shape}")
        sharding = flat_shardings[path]
        sharding = sharding.get_value() if isinstance(sharding, nnx.Variable) else sharding
        values[path] = jax.device_put(array.astype(var.dtype), sharding)
    pure = nnx.to_pure_dict(state)
    for path, value in values.items():
        node = pure
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)


def flat_params(model: Backbone) -> Mapping[tuple, jax.Array]:
    """``{state path: array}`` of every parameter of ``model``."""
    return {path: var.get_value() for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}
