"""Executors of the IR: `reference` (float), `exact` (bit-exact integer golden model)."""
