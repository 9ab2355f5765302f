"""Mixed-precision design-space search: calibrated cost model, Optuna search, sensitivity."""
