"""Checkpoints in both Orbax array formats restore into each other: CPU runs write plain
TensorStore arrays (less host memory), accelerator runs OCDBT (``train/setup.checkpointer``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resrank_jax.config import resolve_config
from resrank_jax.train.checkpoint import Checkpointer
from resrank_jax.train.setup import checkpointer


def small_state() -> dict:
    key = jax.random.key(0)
    params = {"w": jax.random.normal(key, (64, 32)), "b": jnp.arange(32.0)}
    return {"params": params, "opt_state": {"mu": params["w"] * 2}, "step": jnp.int32(7)}


def abstract(state: dict) -> dict:
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )


@pytest.mark.parametrize("write_ocdbt", [True, False])
def test_either_format_restores_with_either_writer_setting(tmp_path, write_ocdbt):
    state = small_state()
    writer = Checkpointer(tmp_path, async_save=False, ocdbt=write_ocdbt)
    writer.save(3, state, {"note": "x"})
    writer.close()
    has_ocdbt = any(p.name == "manifest.ocdbt" for p in tmp_path.rglob("*"))
    assert has_ocdbt == write_ocdbt
    reader = Checkpointer(tmp_path, ocdbt=not write_ocdbt)
    restored = reader.restore(3, abstract(state), with_opt_state=True)
    for got, want in zip(
        jax.tree.leaves((restored["params"], restored["opt_state"])),
        jax.tree.leaves((state["params"], state["opt_state"])),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert restored["opt_step"] == 7


def test_a_cpu_run_saves_synchronously_in_plain_arrays(tmp_path):
    ckpt = checkpointer(tmp_path, resolve_config("tiny"))
    ckpt.save(1, small_state(), {})
    # committed when save returns (an async save is still a tmp directory at this point)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1"]
    ckpt.close()
    assert not any(p.name == "manifest.ocdbt" for p in tmp_path.rglob("*"))
