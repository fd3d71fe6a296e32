"""Device mesh and the one table that maps logical axis names to mesh axes.

Every parameter in resrank_jax carries logical axis names (``("embed", "mlp")`` ...).
``LOGICAL_AXIS_RULES`` is the only place that says which mesh axis each name is split over.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from resrank_jax.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axis (or tuple of axes, or None = replicated)
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("norm", None),
    ("position", None),
    ("layers", None),  # the leading layer axis of scanned layers (``scan_layers``)
)


def make_mesh(shape: Sequence[int] = (-1, 1, 1), devices: Sequence | None = None) -> Mesh:
    """Builds a ``(data, fsdp, tensor)`` mesh; one entry of ``shape`` may be -1 (fills the rest).

    Raises:
        ValueError: when the shape does not divide the number of devices.
    """
    devices = list(devices if devices is not None else jax.devices())
    n = len(devices)
    shape = list(shape)
    if len(shape) != len(MESH_AXES):
        raise ConfigError(f"mesh shape {shape} must have {len(MESH_AXES)} entries {MESH_AXES}")
    if shape.count(-1) > 1:
        raise ConfigError(f"mesh shape {shape}: at most one entry may be -1")
    if any(s == 0 or s < -1 for s in shape):
        raise ConfigError(f"mesh shape {shape}: entries must be positive or -1")
    known = int(np.prod([s for s in shape if s != -1]))
    if -1 in shape:
        if n % known:
            raise ConfigError(f"mesh shape {shape} does not divide the {n} devices")
        shape[shape.index(-1)] = n // known
    if int(np.prod(shape)) != n:
        raise ConfigError(
            f"mesh shape {tuple(shape)} needs {int(np.prod(shape))} devices, have {n}"
        )
    return jax.make_mesh(
        tuple(shape), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices
    )


def mesh_shape_for_batch(batch: int, n_devices: int | None = None) -> tuple[int, int, int]:
    """A ``(data, 1, tensor)`` shape whose data axis divides ``batch``: the largest common
    divisor of the batch and the device count, the remaining devices on ``tensor``."""
    import math

    n = n_devices or jax.device_count()
    data = math.gcd(batch, n)
    return (data, 1, n // data)


def logical_to_spec(names: Sequence[str | None]) -> PartitionSpec:
    """Maps logical axis names to a ``PartitionSpec`` with ``LOGICAL_AXIS_RULES``."""
    rules = dict(LOGICAL_AXIS_RULES)
    unknown = [n for n in names if n is not None and n not in rules]
    if unknown:
        raise KeyError(f"logical axis names {unknown} are not in LOGICAL_AXIS_RULES")
    return PartitionSpec(*(rules[n] if n is not None else None for n in names))


def named_sharding(mesh: Mesh, names: Sequence[str | None]) -> NamedSharding:
    """``NamedSharding`` of an array whose axes carry the logical ``names``."""
    return NamedSharding(mesh, logical_to_spec(names))


def fit_sharding(sharding: NamedSharding, shape: Sequence[int]) -> NamedSharding:
    """Drops the mesh axes of ``sharding`` that do not divide the matching array dimension.

    A vocabulary of 30,522 (BERT) cannot be split 4 ways; that dimension is replicated instead
    of failing, the other dimensions keep their split.
    """
    mesh, fitted = sharding.mesh, []
    for i, entry in enumerate(tuple(sharding.spec) + (None,) * (len(shape) - len(sharding.spec))):
        axes = (entry,) if isinstance(entry, str) else tuple(entry or ())
        kept = []
        for axis in axes:
            if shape[i] % (int(np.prod([mesh.shape[a] for a in kept])) * mesh.shape[axis]) == 0:
                kept.append(axis)
        fitted.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return NamedSharding(mesh, PartitionSpec(*fitted))
