"""Training presets (typed, derived from one base)."""
