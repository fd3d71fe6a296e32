"""Create backbones already sharded: from scratch (random init) or from a flat weight dict.

Shapes come from ``eval_shape``, shardings from the logical axis rules (fitted to the array
shapes), and params are created by a jit with those ``out_shardings`` or placed one by one:
never built on one device and resharded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from resrank_jax.models.bert import Bert
from resrank_jax.models.config import BackboneConfig, BertConfig
from resrank_jax.models.decoder import Decoder
from resrank_jax.sharding import LOGICAL_AXIS_RULES, fit_sharding, make_mesh

Backbone = Decoder | Bert


def backbone_class(cfg: BackboneConfig) -> type[Backbone]:
    return Bert if isinstance(cfg, BertConfig) else Decoder


def default_mesh(mesh: Mesh | None) -> Mesh:
    """The given mesh, or a 1x1x1 mesh on the first device."""
    return mesh if mesh is not None else make_mesh((1, 1, 1), jax.devices()[:1])


def abstract_backbone(cfg: BackboneConfig) -> Backbone:
    """Shapes, dtypes and logical axes of a backbone without allocating its params."""
    cls = backbone_class(cfg)
    return nnx.eval_shape(lambda: cls(cfg, rngs=nnx.Rngs(0)))


def state_shardings(state: nnx.State, mesh: Mesh) -> nnx.State:
    """``NamedSharding`` of every variable in ``state``, from ``LOGICAL_AXIS_RULES``, fitted
    to the array shapes (``sharding.fit_sharding``)."""
    with nnx.logical_axis_rules(LOGICAL_AXIS_RULES):
        shardings = nnx.get_named_sharding(state, mesh)
    return jax.tree.map(lambda s, v: fit_sharding(s, v.shape), shardings, state)


def param_count(cfg: BackboneConfig) -> int:
    """Number of parameters, from ``eval_shape`` (no memory allocated)."""
    state = nnx.state(abstract_backbone(cfg), nnx.Param)
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(state))


def init_backbone(cfg: BackboneConfig, *, mesh: Mesh | None = None, seed: int = 0) -> Backbone:
    """A randomly initialised backbone whose params are born sharded on ``mesh``."""
    mesh = default_mesh(mesh)
    cls = backbone_class(cfg)
    graphdef, abstract_state = nnx.split(abstract_backbone(cfg))
    shardings = state_shardings(abstract_state, mesh)

    @jax.jit
    def create() -> nnx.State:
        state = nnx.state(cls(cfg, rngs=nnx.Rngs(seed)))
        return jax.lax.with_sharding_constraint(state, shardings)

    with jax.set_mesh(mesh):
        return nnx.merge(graphdef, create())


def backbone_from_arrays(
    cfg: BackboneConfig,
    get_array: Callable[[tuple], np.ndarray],
    *,
    mesh: Mesh | None = None,
) -> Backbone:
    """Builds a backbone whose every param comes from ``get_array(path)``, placed on ``mesh``.

    ``get_array`` receives the NNX state path (e.g. ``("layers", 0, "mlp", "up_proj",
    "kernel")``; with scanned layers ``("layers", "mlp", "up_proj", "kernel")``, whose array
    stacks all layers ``[L, ...]``) and returns a host array of the param's shape; it is
    called once per param, so a checkpoint is streamed tensor by tensor (a scanned param
    layer by layer) instead of held twice in memory.
    """
    mesh = default_mesh(mesh)
    graphdef, state = nnx.split(abstract_backbone(cfg))
    flat_shardings = dict(nnx.to_flat_state(state_shardings(state, mesh)))
    pure = nnx.to_pure_dict(state)
    for path, var in nnx.to_flat_state(state):
        array = np.asarray(get_array(path))
        if array.shape != tuple(var.shape):
            raise ValueError(
                f"param {'/'.join(map(str, path))}: shape {array.shape}, expected {var.shape}"
            )
        sharding = flat_shardings[path]
        sharding = sharding.get_value() if isinstance(sharding, nnx.Variable) else sharding
        node = pure
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = jax.device_put(array.astype(var.dtype), sharding)
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)


def flat_params(model: Backbone) -> Mapping[tuple, jax.Array]:
    """``{state path: array}`` of every parameter of ``model``."""
    return {path: var.get_value() for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}
