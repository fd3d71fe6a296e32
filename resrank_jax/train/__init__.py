"""The training system: data lists, sharded state, the jitted step, Orbax checkpoints, loop."""
