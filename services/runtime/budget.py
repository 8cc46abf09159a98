"""What one request may cost before it reaches the model: an item cap and a pixel (or voxel) budget.

Preparing items (decoding, resizing) happens on the gRPC thread before the model sees them, so a small request
of many compressed images can cost far more memory and time than its bytes suggest. A servicer makes one
`RequestBudget` per call, counts its items before preparing any, charges each item's pixels as soon as its header
says how many (before it is decoded), and checks between items whether the caller is still waiting.
"""

from __future__ import annotations

from typing import Protocol

from modelyard.runtime.errors import Cancelled, DeadlineExceeded, InvalidInput


class CallContext(Protocol):
    def is_active(self) -> bool: ...

    def time_remaining(self) -> float | None: ...


class RequestBudget:
    """Limits of one call. `items_key` and `pixels_key` are the config keys a refusal names."""

    def __init__(
        self,
        max_items: int,
        max_pixels: int,
        context: CallContext | None = None,
        items_key: str = "model.max_items_per_request",
        pixels_key: str = "model.max_request_pixels",
        unit: str = "pixels",
    ) -> None:
        self.max_items = max_items
        self.max_pixels = max_pixels
        self.context = context
        self.items_key = items_key
        self.pixels_key = pixels_key
        self.unit = unit
        self.used = 0

    def count(self, items: int, what: str = "items") -> None:
        """Refuse more than max_items items (before any is prepared)."""
        if items > self.max_items:
            raise InvalidInput(
                f"{items} {what} in one request, over the limit of {self.max_items} per request ({self.items_key}); "
                "split the request"
            )

    def charge(self, pixels: int, what: str) -> None:
        """Add one item's pixels, refusing once the request's total passes max_pixels; checks the call too."""
        self.check()
        self.used += int(pixels)
        if self.used > self.max_pixels:
            raise InvalidInput(
                f"{what}: the request's items add up to over {self.max_pixels} {self.unit}, this service's budget "
                f"per request ({self.pixels_key}); split the request or send smaller images"
            )

    def check(self) -> None:
        """Stop preparing when the caller has gone: its deadline passed or it cancelled."""
        if self.context is None:
            return
        remaining = self.context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded("the deadline passed while the request's items were being prepared")
        if not self.context.is_active():
            raise Cancelled("the call was cancelled while its items were being prepared")
