"""Training presets (typed, derived from one base): ``resrank_jax/configs/presets.py``, which the
repository's top-level ``configs/`` links to and the wheel ships."""
