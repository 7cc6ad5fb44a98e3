"""pixelbatch: batch image compression for product catalogs."""

__version__ = "0.1.0"
