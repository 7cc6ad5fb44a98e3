"""Command line: thin faces over the services; each module holds one group of commands."""

from pixelbatch.cli import batches, database, keys, processing, secrets, serving, storage
from pixelbatch.cli.common import app

__all__ = ["app", "batches", "database", "keys", "processing", "secrets", "serving", "storage"]
