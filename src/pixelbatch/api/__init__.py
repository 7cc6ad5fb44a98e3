"""The HTTP API: a thin FastAPI face over ``pixelbatch.batches``."""
