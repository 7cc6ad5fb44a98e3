"""Where outputs live: a small interface with local-disk (and later S3) implementations."""

from pixelbatch.storage.base import Storage, StoredObject, validate_key
from pixelbatch.storage.factory import storage_from_settings
from pixelbatch.storage.local import LocalStorage

__all__ = ["LocalStorage", "Storage", "StoredObject", "storage_from_settings", "validate_key"]
