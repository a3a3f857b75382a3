"""Data sources: each turns one released data layout into a `Cohort`."""
