"""Applications built on the library (not imported by it): the demo (``resrank demo``), one
experiment (``python -m resrank_jax.apps.experiment``), the ablation sweep
(``python -m resrank_jax.apps.sweep``) and the SVG plot they draw. They read the packaged data
(``resrank_jax.data.bundled``) and write under the output directory they are given."""
