"""Who writes a message or uploads a file: the kind decides what they may do (only agents write notes)."""

from __future__ import annotations

from dataclasses import dataclass

from zaima.models import Customer, StaffUser
from zaima.models.conversations import SENDER_KINDS

BOT_NAME = "智能客服"
SYSTEM_NAME = "系统"


@dataclass(frozen=True)
class Sender:
    kind: str  # customer | bot | agent | system
    id: str | None
    name: str

    def __post_init__(self):
        if self.kind not in SENDER_KINDS:
            raise ValueError(f"unknown sender kind {self.kind!r}")

    @classmethod
    def customer(cls, customer: Customer) -> Sender:
        return cls("customer", str(customer.id), customer.display_name)

    @classmethod
    def agent(cls, staff: StaffUser) -> Sender:
        return cls("agent", str(staff.id), staff.display_name)

    @classmethod
    def bot(cls, name: str = BOT_NAME) -> Sender:
        return cls("bot", None, name)

    @classmethod
    def system(cls) -> Sender:
        return cls("system", None, SYSTEM_NAME)
