"""Events to broadcast after a conversation changes: pure functions from rows to JSON-serialisable dicts.

Topics:
- ``conv:{id}``        what the customer may see: public messages, read receipts, public conversation fields.
- ``conv:{id}:staff``  the staff view of everything: every message including internal notes, with staff
                       ids, labels, priority and assignee. A superset of the public topic, so the console
                       subscribes to this topic alone and the widget to the public one alone.
- ``inbox``            one summary row per changed conversation, for the agents' inbox list.

Every payload has a ``type``. Messages carry their ``seq``: a client that missed events asks for the
messages after the last seq it holds (the database is the source of truth, pub/sub may drop). Internal
notes take seqs too, so the seqs a customer sees may skip numbers; a skip is not a loss.

The public serialisers are the only way conversation data reaches a customer: they never include
internal notes, staff ids, labels or priority.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime

from zaima.models import Attachment, Conversation, Customer, Message

INBOX_TOPIC = "inbox"
PREVIEW_CHARS = 80
# An order page link with its owner's access token (the bot's and the reply mail's links carry one).
_ORDER_TOKEN = re.compile(r"(/orders/[0-9A-Za-z-]+)\?t=[0-9A-Za-z_-]+(&?)")


def staff_text(body: str) -> str:
    """A message body as staff see it: order links without the owner's token. The token opens the order
    page with its keys in plaintext, which would let anyone reading a transcript see them without the
    console's audited reveal (and the link keeps working); staff open orders from the console instead."""
    if "?t=" not in body:
        return body
    return _ORDER_TOKEN.sub(lambda m: m.group(1) + ("?" if m.group(2) else ""), body)


@dataclass(frozen=True)
class Event:
    topic: str
    payload: dict


def public_topic(conversation_id: int) -> str:
    return f"conv:{conversation_id}"


def staff_topic(conversation_id: int) -> str:
    return f"conv:{conversation_id}:staff"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# --- serialisers ----------------------------------------------------------------------------------------------


def attachment_key(attachment: Attachment) -> str:
    """The secret part of an image's URL: 128 bits derived from its content hash. Only someone who may read the
    message that carries the URL (or who already has the image) can know it."""
    # Hashed again with the id rather than cut from the content hash: the URL does not reveal the image's
    # fingerprint, and one image attached twice gets two unrelated keys.
    return hashlib.sha256(f"zaima-attachment:{attachment.id}:{attachment.sha256}".encode()).hexdigest()[:32]


def check_attachment_key(attachment: Attachment, key: str | None) -> bool:
    return isinstance(key, str) and hmac.compare_digest(attachment_key(attachment).encode(), key.encode())


def attachment_view(attachment: Attachment | None) -> dict | None:
    if attachment is None:
        return None
    url = f"/chat/attachments/{attachment.id}/{attachment_key(attachment)}"
    return {
        "id": attachment.id,
        "url": url,
        "thumb_url": url + "?thumb=1",
        "content_type": attachment.content_type,
        "byte_size": attachment.byte_size,
        "width": attachment.width,
        "height": attachment.height,
        "name": attachment.original_name,
    }


def message_public_view(message: Message) -> dict:
    """A message as the customer sees it. Never call this for an internal note."""
    if message.internal:
        raise ValueError("an internal note has no public view")
    return {
        "id": message.id,
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "sender_kind": message.sender_kind,
        "sender_name": message.sender_name,
        "body": message.body,
        "attachment": attachment_view(message.attachment),
        # Echoed so the widget can match its own sends; an agent's client id is the console's business.
        "client_msg_id": message.client_msg_id if message.sender_kind == "customer" else None,
        "created_at": _iso(message.created_at),
    }


def message_staff_view(message: Message) -> dict:
    return {
        "id": message.id,
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "sender_kind": message.sender_kind,
        "sender_id": message.sender_id,
        "sender_name": message.sender_name,
        "body": staff_text(message.body),
        "internal": message.internal,
        "attachment": attachment_view(message.attachment),
        "client_msg_id": message.client_msg_id,
        "created_at": _iso(message.created_at),
    }


def conversation_public_view(conversation: Conversation, order_no: str | None) -> dict:
    return {
        "id": conversation.id,
        "ticket_no": conversation.ticket_no,
        "status": conversation.status,
        "channel": conversation.channel,
        "order_no": order_no,
        "created_at": _iso(conversation.created_at),
        "updated_at": _iso(conversation.updated_at),
        "last_message_at": _iso(conversation.last_message_at),
        "last_seq": conversation.last_seq,
        "customer_read_seq": conversation.customer_read_seq,
        "agent_read_seq": conversation.agent_read_seq,
    }


def conversation_staff_view(conversation: Conversation, order_no: str | None) -> dict:
    return {
        **conversation_public_view(conversation, order_no),
        "customer_id": conversation.customer_id,
        "priority": conversation.priority,
        "labels": list(conversation.labels or []),
        "assignee_id": conversation.assignee_id,
        "first_human_reply_at": _iso(conversation.first_human_reply_at),
        "resolved_at": _iso(conversation.resolved_at),
        "version": conversation.version,
        "vip": conversation.vip,
        "skill": conversation.skill,
        "handoff_at": _iso(conversation.handoff_at),
        "queued_at": _iso(conversation.queued_at),
        "sla": {  # the console draws countdowns from the due times
            "policy": conversation.sla_policy,
            "first_response_due_at": _iso(conversation.first_response_due_at),
            "next_response_due_at": _iso(conversation.next_response_due_at),
            "resolution_due_at": _iso(conversation.resolution_due_at),
            "paused": conversation.sla_paused_at is not None,
            "warned": list(conversation.sla_warned or []),
            "breached": list(conversation.sla_breached or []),
        },
    }


def message_preview(message: Message | None) -> dict | None:
    if message is None:
        return None
    text = " ".join(staff_text(message.body).split())
    if len(text) > PREVIEW_CHARS:
        text = text[: PREVIEW_CHARS - 1] + "…"
    if not text and message.attachment_id is not None:
        text = "[图片]"
    return {"seq": message.seq, "sender_kind": message.sender_kind, "sender_name": message.sender_name,
            "text": text, "created_at": _iso(message.created_at)}


def inbox_item_view(conversation: Conversation, customer: Customer, order_no: str | None,
                    last_message: Message | None, unread: int) -> dict:
    """One row of the agents' inbox: `last_message` is the last public message, `unread` counts the
    customer's messages after the agents' read marker."""
    return {
        **conversation_staff_view(conversation, order_no),
        "customer": {"id": customer.id, "kind": customer.kind, "display_name": customer.display_name},
        "last_message": message_preview(last_message),
        "unread": unread,
    }


# --- events ---------------------------------------------------------------------------------------------------


def message_events(message: Message) -> list[Event]:
    """A public message goes to both topics (each in its own view); an internal note to staff only."""
    cid = message.conversation_id
    staff = Event(staff_topic(cid), {"type": "message", "conversation_id": cid,
                                     "message": message_staff_view(message)})
    if message.internal:
        return [staff]
    public = Event(public_topic(cid), {"type": "message", "conversation_id": cid,
                                       "message": message_public_view(message)})
    return [public, staff]


def read_events(conversation_id: int, reader: str, seq: int) -> list[Event]:
    """A read receipt: who ('customer' | 'agent') has read up to which seq. Visible to both sides."""
    payload = {"type": "read", "conversation_id": conversation_id, "reader": reader, "seq": seq}
    return [Event(public_topic(conversation_id), dict(payload)), Event(staff_topic(conversation_id), payload)]


def conversation_events(conversation: Conversation, order_no: str | None, *, public: bool = True) -> list[Event]:
    """The conversation's fields changed. `public=False` when only staff-only fields changed (labels,
    priority, assignee), so the customer's topic does not even learn that something happened."""
    cid = conversation.id
    events = []
    if public:
        events.append(Event(public_topic(cid), {"type": "conversation", "conversation_id": cid,
                                                "conversation": conversation_public_view(conversation, order_no)}))
    events.append(Event(staff_topic(cid), {"type": "conversation", "conversation_id": cid,
                                           "conversation": conversation_staff_view(conversation, order_no)}))
    return events


def inbox_event(item: dict) -> Event:
    return Event(INBOX_TOPIC, {"type": "inbox", "conversation_id": item["id"], "item": item})
