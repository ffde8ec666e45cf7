"""The statistics every layer may use: metrics, ridge solves, conformal tables, adaptive intervals (no model code)."""
