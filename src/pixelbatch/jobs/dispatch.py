"""The seam between the API and whatever runs the work."""

from __future__ import annotations

from typing import Protocol


class Dispatcher(Protocol):
    def new_work(self, images: int) -> None:
        """Called after new or re-queued images were committed to the database."""
        ...
