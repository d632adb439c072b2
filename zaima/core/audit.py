"""Who did something: the actor recorded on every timeline entry."""

from __future__ import annotations

from dataclasses import dataclass

ACTOR_KINDS = ("customer", "bot", "agent", "system", "gateway", "supplier")


@dataclass(frozen=True)
class Actor:
    kind: str
    id: str | None = None
    conversation_id: int | None = None

    def __post_init__(self):
        if self.kind not in ACTOR_KINDS:
            raise ValueError(f"unknown actor kind {self.kind!r}")


SYSTEM = Actor("system")
GATEWAY = Actor("gateway", "epay")
SUPPLIER = Actor("supplier")
CUSTOMER = Actor("customer")
