"""All ORM tables. Importing this package registers every table on Base.metadata."""

from zaima.models.bot import BotAction, BotState, KbArticle, OfficialContact
from zaima.models.catalog import Product, StoreSetting
from zaima.models.conversations import Attachment, CannedResponse, Conversation, Customer, Message
from zaima.models.demo import DemoGatewayTrade, DemoSupplierOrder
from zaima.models.jobs import Job
from zaima.models.orders import (
    DeliveryAttempt,
    Order,
    OrderEvent,
    Payment,
    PaymentNotification,
    Refund,
    SupplierOrder,
)
from zaima.models.service import CsatRating, MailOptOut, ProblemReport, SlaEvent
from zaima.models.staff import StaffUser
from zaima.models.stock import CardKey, ImportBatch

__all__ = [
    "Attachment",
    "BotAction",
    "BotState",
    "CannedResponse",
    "CardKey",
    "CsatRating",
    "MailOptOut",
    "Conversation",
    "Customer",
    "DeliveryAttempt",
    "DemoGatewayTrade",
    "DemoSupplierOrder",
    "ImportBatch",
    "Job",
    "KbArticle",
    "Message",
    "OfficialContact",
    "Order",
    "OrderEvent",
    "Payment",
    "PaymentNotification",
    "ProblemReport",
    "Product",
    "Refund",
    "SlaEvent",
    "StaffUser",
    "StoreSetting",
    "SupplierOrder",
]
