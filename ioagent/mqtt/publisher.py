"""The one interface that logic uses to publish, so it can be tested without a broker."""

from __future__ import annotations

from typing import Protocol


class Publisher(Protocol):
    async def publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        """Publish ``payload``; retained topics are also replayed after every reconnect."""
        ...
