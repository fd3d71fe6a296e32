"""Train state (params, optimizer state, step) with explicit shardings, the per-stage
optimizer (trainable-parameter regexes), and the jitted train step."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from optax.transforms import MaskedNode

from resrank_jax.config import LossConfig, OptimConfig, StageConfig
from resrank_jax.models.build import state_shardings
from resrank_jax.tasks import Task
from resrank_jax.train.objective import compute_loss

SCALAR_PARAMS = ("gate", "alpha", "slot_scale")


def param_path(path: tuple) -> str:
    return "/".join(str(p) for p in path)


def trainable_labels(params: nnx.State, stage: StageConfig) -> nnx.State:
    """Per param: ``"freeze"``, or the name of its learning-rate group (``"train"`` at the
    stage's lr, ``"train_x{m}"`` at ``m`` times it, from the first matching ``lr_scale``
    regex). Regexes fully match the ``/``-joined path; one matching nothing is an error: it
    names a missing group."""
    paths = [param_path(p) for p, _ in nnx.to_flat_state(params)]
    patterns = [*stage.trainable, *(p for p, _ in stage.lr_scale)]
    for pattern in patterns:
        if not any(re.fullmatch(pattern, p) for p in paths):
            raise ValueError(
                f"stage {stage.name!r}: pattern {pattern!r} matches no parameter (e.g. {paths[:3]})"
            )

    def label(path: str) -> str:
        if not any(re.fullmatch(p, path) for p in stage.trainable):
            return "freeze"
        scale = next((m for p, m in stage.lr_scale if re.fullmatch(p, path)), 1.0)
        return "train" if scale == 1.0 else f"train_x{scale:g}"

    flat = [(path, label(param_path(path))) for path, _ in nnx.to_flat_state(params)]
    return nnx.from_flat_state(flat)


# HF Trainer's ``get_decay_parameter_names`` name rule (transformers >= 4.49, incl. the 4.52.3
# that E2Rank pins), searched in the lower-cased path with "/" read as "."
NO_DECAY_PATTERNS = (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")


def weight_decay_mask(params: nnx.State, decay_norms_and_biases: bool = False) -> nnx.State:
    """Per param: True = AdamW decays it. With ``decay_norms_and_biases`` every param; else
    all but biases and norm scales/biases (HF Trainer's name rule, ``NO_DECAY_PATTERNS``) and
    the scalars of ``SCALAR_PARAMS``; embeddings and kernels are decayed, as in HF."""

    def decays(path: tuple) -> bool:
        name = param_path(path).lower().replace("/", ".")
        if str(path[-1]) in SCALAR_PARAMS:
            return False
        return not any(re.search(p, name) for p in NO_DECAY_PATTERNS)

    flat = nnx.to_flat_state(params)
    return nnx.from_flat_state([(p, decay_norms_and_biases or decays(p)) for p, _ in flat])


def make_optimizer(params: nnx.State, stage: StageConfig, steps: int, cfg: OptimConfig):
    """AdamW with linear warmup and linear decay on the stage's trainable params, clipped by
    the global norm of the trainable gradients; frozen params get zero updates. Params in an
    ``lr_scale`` group run at a multiple of the stage's learning rate (and weight decay).
    Weight decay skips norms, biases and scalars unless ``cfg.decay_norms_and_biases``
    (:func:`weight_decay_mask`)."""
    warmup = max(1, round(cfg.warmup_ratio * steps))

    def schedule(count):
        """Linear warmup to ``lr`` over ``warmup`` steps (step 0 already gets lr/warmup), then
        linear decay towards 0 at the stage's end."""
        t = jnp.asarray(count, jnp.float32)
        up = (t + 1) / warmup
        down = (steps - t) / max(1, steps - warmup + 1)
        return stage.lr * jnp.clip(jnp.minimum(up, down), 0.0, 1.0)

    labels = trainable_labels(params, stage)
    groups = {"train": 1.0, **{f"train_x{m:g}": m for _, m in stage.lr_scale if m != 1.0}}

    decay_mask = weight_decay_mask(params, cfg.decay_norms_and_biases)

    def adamw(scale: float) -> optax.GradientTransformation:
        return optax.adamw(
            lambda count: scale * schedule(count),
            b1=cfg.b1,
            b2=cfg.b2,
            weight_decay=cfg.weight_decay,
            mask=decay_mask,
        )

    keep = {g: optax.identity() for g in groups}
    tx = optax.chain(
        optax.multi_transform({**keep, "freeze": optax.set_to_zero()}, labels),
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.multi_transform(
            {**{g: adamw(m) for g, m in groups.items()}, "freeze": optax.set_to_zero()}, labels
        ),
    )
    return tx, schedule


def train_state_shardings(params: nnx.State, tx, mesh: Mesh):
    """Shardings of ``{"params", "opt_state", "step"}``: params by the logical rules, optimizer
    moments like their params, everything else replicated."""
    param_sh = state_shardings(params, mesh)
    replicated = NamedSharding(mesh, P())
    abstract_opt = jax.eval_shape(tx.init, params)
    # Params outside a group appear as MaskedNode in that group's state: keep them as they are.
    opt_sh = optax.tree_map_params(
        tx,
        lambda v, s: v if isinstance(v, MaskedNode) else s,
        abstract_opt,
        param_sh,
        transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, (NamedSharding, MaskedNode)),
    )
    return {"params": param_sh, "opt_state": opt_sh, "step": replicated}


def batch_shardings(batch_like: dict, mesh: Mesh) -> dict:
    """Every batch array is split on its first (list) axis over ``data`` x ``fsdp``."""
    return {k: NamedSharding(mesh, P(("data", "fsdp"))) for k in batch_like}


def make_train_step(
    graphdef,
    rest,
    labels: nnx.State,
    tx,
    schedule,
    weights: dict[str, float],
    loss_cfg: LossConfig,
    task: Task,
    grad_accum: int,
    shardings: dict,
    batch_sh: dict,
) -> Callable:
    """The pure, jitted step ``(state, batch) -> (state, metrics)`` with explicit in/out
    shardings and the state donated. ``grad_accum > 1`` averages gradients over microbatches
    (``lax.scan``); each microbatch's InfoNCE then sees only its own in-batch negatives.
    ``labels`` (``trainable_labels``): frozen params get no gradient at all, so their backward
    pass is not computed and ``grad_norm`` is the trainable gradients' norm."""

    def loss_fn(params, batch):
        model = nnx.merge(graphdef, without_frozen_gradients(params, labels), rest)
        return compute_loss(task, model, batch, weights, loss_cfg)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state, batch):
        params = state["params"]
        if grad_accum == 1:
            (_, metrics), grads = grad_fn(params, batch)
        else:
            micro = jax.tree.map(lambda x: x.reshape(grad_accum, -1, *x.shape[1:]), batch)

            def body(carry, mb):
                (_, m), g = grad_fn(params, mb)
                return jax.tree.map(jnp.add, carry, (g, m)), None

            zeros = jax.tree.map(
                jnp.zeros_like, jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro))
            )
            (grads, metrics), _ = jax.lax.scan(body, (zeros[1], zeros[0][1]), micro)
            grads = jax.tree.map(lambda g: g / grad_accum, grads)
            metrics = jax.tree.map(lambda m: m / grad_accum, metrics)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        metrics = dict(metrics)
        metrics["grad_norm"] = optax.tree.norm(grads)
        metrics["update_norm"] = optax.tree.norm(updates)
        metrics["param_norm"] = optax.tree.norm(new_params)
        for name in SCALAR_PARAMS:  # ResRank's learnable scalars, when the model has them
            if name in new_params:
                metrics[name] = new_params[name][...]
        metrics["lr"] = schedule(state["step"])
        return {"params": new_params, "opt_state": opt_state, "step": state["step"] + 1}, metrics

    return jax.jit(
        step, in_shardings=(shardings, batch_sh), out_shardings=(shardings, None), donate_argnums=0
    )


def without_frozen_gradients(params: nnx.State, labels: nnx.State) -> nnx.State:
    """``params`` with ``stop_gradient`` on every param labelled ``"freeze"``."""

    def cut(label: str, param):
        return jax.tree.map(jax.lax.stop_gradient, param) if label == "freeze" else param

    return jax.tree.map(cut, labels, params)


def init_opt_state(tx, params, shardings) -> optax.OptState:
    """Optimizer state created directly with the moments' shardings."""
    return jax.jit(tx.init, out_shardings=shardings["opt_state"])(params)


@dataclasses.dataclass
class StageStep:
    """Everything one stage's step needs: optimizer, lr schedule, state and batch shardings,
    the jitted step and its executables, one per batch shape (``compile``)."""

    tx: optax.GradientTransformation
    schedule: Callable
    shardings: dict
    batch_shardings: dict
    jitted: Callable
    abstract_state: dict
    compiled: dict = dataclasses.field(default_factory=dict)

    def compile(self, batch_like: dict) -> jax.stages.Compiled:
        """The step compiled for batches shaped like ``batch_like`` (arrays, or anything with
        ``shape`` and ``dtype``), lowered against the abstract state: a stage compiles before
        its optimizer state exists, so the compiler's working memory never adds to it."""
        key = tuple(sorted((k, tuple(v.shape)) for k, v in batch_like.items()))
        if key not in self.compiled:
            batch = {
                k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=self.batch_shardings[k])
                for k, v in batch_like.items()
            }
            self.compiled[key] = self.jitted.lower(self.abstract_state, batch).compile()
        return self.compiled[key]

    @property
    def compiles(self) -> int:
        """Executables compiled so far (one per batch shape)."""
        return len(self.compiled)

    def step_fn(self, state: dict, batch: dict) -> tuple[dict, dict]:
        """One step (``state`` is donated); compiles on a batch shape it has not seen."""
        return self.compile(batch)(state, batch)

    def init_state(self, params, opt_step: int = 0, opt_state=None) -> dict:
        """State on the mesh: a fresh optimizer unless ``opt_state`` (restored) is given."""
        params = jax.device_put(params, self.shardings["params"])
        if opt_state is None:
            opt_state = init_opt_state(self.tx, params, self.shardings)
        step = jax.device_put(np.int32(opt_step), self.shardings["step"])
        return {"params": params, "opt_state": opt_state, "step": step}


def abstract_train_state(params, tx, shardings: dict) -> dict:
    """``{"params", "opt_state", "step"}`` as shape structs carrying ``shardings``: what
    ``StageStep.compile`` lowers against and the Orbax restore target (any mesh)."""
    abstract = {
        "params": params,
        "opt_state": jax.eval_shape(tx.init, params),
        "step": jax.ShapeDtypeStruct((), np.int32),
    }
    return jax.tree.map(
        lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), abstract, shardings
    )


def build_stage_step(
    graphdef,
    rest,
    params,
    stage: StageConfig,
    steps: int,
    cfg,
    task: Task,
    mesh: Mesh,
    batch_example: dict,
    *,
    grad_accum: int | None = None,
) -> StageStep:
    """Optimizer, shardings and the compiled-once step of ``stage`` (``cfg``: TrainConfig;
    ``task``: the model's task, whose ``forward`` the loss calls)."""
    tx, schedule = make_optimizer(params, stage, steps, cfg.optim)
    shardings = train_state_shardings(params, tx, mesh)
    batch_sh = batch_shardings(batch_example, mesh)
    jitted = make_train_step(
        graphdef,
        rest,
        trainable_labels(params, stage),
        tx,
        schedule,
        dict(stage.weights),
        cfg.loss,
        task,
        grad_accum or cfg.optim.grad_accum,
        shardings,
        batch_sh,
    )
    abstract_state = abstract_train_state(params, tx, shardings)
    return StageStep(tx, schedule, shardings, batch_sh, jitted, abstract_state)
