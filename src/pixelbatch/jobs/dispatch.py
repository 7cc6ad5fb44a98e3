"""The seam between the API and whatever runs the work."""

from __future__ import annotations

import uuid
from typing import Protocol


class Dispatcher(Protocol):
    def new_work(self, images: int) -> None:
        """Called after new or re-queued images were committed to the database."""
        ...

    def stopped(self, batch_id: uuid.UUID) -> None:
        """Called after a batch was cancelled or deleted (committed): its images in flight
        stop at their next stage boundary, and none of them starts a download after this."""
        ...
