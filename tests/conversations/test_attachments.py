"""Image attachments: the type comes from the bytes, oversized and non-images are refused with a clear
message, decompression bombs are stopped before decoding, originals and thumbnails land on disk whole,
and the same bytes are stored once."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from tests.conversations.helpers import change, make_agent, make_conversation, make_customer, post
from zaima.conversations import conversations as convs
from zaima.conversations.attachments import (
    AttachmentTooLarge,
    ImageTooBig,
    NotAnImage,
    attachment_file,
    attachments_root,
    get_attachment,
    store_image,
)
from zaima.conversations.conversations import ConversationClosed
from zaima.conversations.events import check_attachment_key
from zaima.conversations.senders import Sender
from zaima.core.errors import Forbidden, NotFound, ValidationFailed
from zaima.db import unit_of_work


def image_bytes(fmt: str, size=(800, 600), mode="RGB", color=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    image = Image.new(mode, size, color)
    # Some structure, so the encoders produce real data rather than one flat run.
    for x in range(0, size[0], 7):
        image.putpixel((x, (x * 3) % size[1]), (0, 0, 0) if mode == "RGB" else (0, 0, 0, 255))
    image.save(out, fmt)
    return out.getvalue()


async def upload(ctx, conversation, uploader, data: bytes, filename: str = "screenshot.png", settings=None):
    async def run(session):
        fresh = await convs.get_conversation(session, conversation.id)
        return await store_image(session, settings or ctx.settings, ctx.clock, fresh, uploader, data, filename)

    return await ctx.transact(run)


def files_under(root) -> list:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
async def chat(ctx):
    customer = await make_customer(ctx)
    conversation = await make_conversation(ctx, customer)
    return customer, conversation


# --- refused --------------------------------------------------------------------------------------------------


async def test_an_upload_over_the_limit_is_refused_with_the_limit_in_the_message(ctx, chat):
    customer, conversation = chat
    limit = ctx.settings.attachment_max_bytes
    assert limit == 5 * 1024 * 1024
    data = image_bytes("PNG") + b"\0" * limit
    with pytest.raises(AttachmentTooLarge) as err:
        await upload(ctx, conversation, Sender.customer(customer), data)
    assert err.value.message_zh == "图片不能超过 5 MB"
    assert err.value.message_en == "images must be at most 5 MB"
    assert err.value.status == 413

    smaller = ctx.settings.model_copy(update={"attachment_max_bytes": 1536 * 1024})
    with pytest.raises(AttachmentTooLarge) as err:
        await upload(ctx, conversation, Sender.customer(customer), b"x" * (1536 * 1024 + 1), settings=smaller)
    assert err.value.message_zh == "图片不能超过 1.5 MB"
    assert files_under(attachments_root(ctx.settings)) == []


@pytest.mark.parametrize("name,data", [
    ("notes.png", "这不是图片，只是改了扩展名的文本文件\n".encode() * 20),
    ("fake.png", b"\x89PNG\r\n\x1a\n" + b"junk" * 500),
    ("truncated.png", image_bytes("PNG")[:400]),
    ("bitmap.png", image_bytes("BMP")),  # a real image, but not a format we accept
    ("empty.png", b""),
])
async def test_anything_that_is_not_a_whole_png_jpeg_webp_or_gif_is_refused(ctx, chat, name, data):
    customer, conversation = chat
    with pytest.raises(NotAnImage) as err:
        await upload(ctx, conversation, Sender.customer(customer), data, filename=name)
    assert err.value.status == 415
    if data:
        assert err.value.message_zh == "只能上传 PNG、JPEG、WEBP 或 GIF 图片，该文件无法识别为图片"
    assert files_under(attachments_root(ctx.settings)) == []


async def test_a_decompression_bomb_is_refused_before_decoding(ctx, chat):
    customer, conversation = chat
    out = io.BytesIO()
    Image.new("1", (8000, 6000)).save(out, "PNG")  # 48 megapixels in a few kilobytes
    assert len(out.getvalue()) < 100_000
    with pytest.raises(ImageTooBig) as err:
        await upload(ctx, conversation, Sender.customer(customer), out.getvalue())
    assert "8000×6000" in err.value.message_zh


async def test_the_bot_cannot_upload_and_a_closed_conversation_takes_no_uploads(ctx, chat, clock):
    customer, conversation = chat
    with pytest.raises(Forbidden):
        await upload(ctx, conversation, Sender.bot(), image_bytes("PNG"))
    await change(ctx, conversation.id, lambda s, c: convs.set_status(s, clock, c, "closed"))
    with pytest.raises(ConversationClosed):
        await upload(ctx, conversation, Sender.customer(customer), image_bytes("PNG"))


# --- stored ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt,content_type,thumb_format", [
    ("PNG", "image/png", "JPEG"), ("JPEG", "image/jpeg", "JPEG"), ("WEBP", "image/webp", "JPEG"),
    ("GIF", "image/gif", "JPEG"),
])
async def test_a_real_image_is_stored_with_a_small_thumbnail(ctx, chat, clock, fmt, content_type, thumb_format):
    customer, conversation = chat
    data = image_bytes(fmt, size=(1280, 720))
    attachment = await upload(ctx, conversation, Sender.customer(customer), data, filename="C:\\截图\\pay.png")

    assert (attachment.content_type, attachment.width, attachment.height) == (content_type, 1280, 720)
    assert attachment.byte_size == len(data) and attachment.sha256 == hashlib.sha256(data).hexdigest()
    assert attachment.original_name == "pay.png"
    assert attachment.uploader_kind == "customer" and attachment.uploader_id == str(customer.id)
    now = clock.now()
    assert attachment.storage_path.startswith(f"{now:%Y}/{now:%m}/{attachment.sha256}.")
    original = attachment_file(ctx.settings, attachment)
    assert original.read_bytes() == data
    with Image.open(attachment_file(ctx.settings, attachment, thumbnail=True)) as thumb:
        assert thumb.format == thumb_format
        assert max(thumb.size) <= 320 and thumb.size == (320, 180)
    assert not [p for p in files_under(attachments_root(ctx.settings)) if p.name.startswith(".")]  # no temp files


async def test_a_transparent_png_keeps_its_transparency_in_the_thumbnail(ctx, chat):
    customer, conversation = chat
    data = image_bytes("PNG", size=(400, 1000), mode="RGBA", color=(0, 0, 0, 0))
    attachment = await upload(ctx, conversation, Sender.customer(customer), data)
    with Image.open(attachment_file(ctx.settings, attachment, thumbnail=True)) as thumb:
        assert thumb.format == "PNG" and thumb.mode == "RGBA" and thumb.size == (128, 320)


async def test_the_type_comes_from_the_bytes_not_the_name(ctx, chat):
    customer, conversation = chat
    attachment = await upload(ctx, conversation, Sender.customer(customer), image_bytes("JPEG"), filename="x.png")
    assert attachment.content_type == "image/jpeg" and attachment.storage_path.endswith(".jpg")


async def test_the_same_bytes_are_stored_once_on_disk(ctx, chat, clock):
    customer, conversation = chat
    data = image_bytes("PNG")
    first = await upload(ctx, conversation, Sender.customer(customer), data)
    clock.advance(days=40)  # another month: still the same file
    second = await upload(ctx, conversation, Sender.customer(customer), data, filename="again.png")
    assert first.id != second.id
    assert (first.storage_path, first.thumbnail_path) == (second.storage_path, second.thumbnail_path)
    assert len(files_under(attachments_root(ctx.settings))) == 2  # one original, one thumbnail


# --- in messages ----------------------------------------------------------------------------------------------


async def test_an_image_can_be_sent_without_text_and_shows_in_the_public_event(ctx, chat):
    customer, conversation = chat
    attachment = await upload(ctx, conversation, Sender.customer(customer), image_bytes("PNG"))
    posted = await post(ctx, conversation.id, Sender.customer(customer), "", attachment=attachment)
    assert posted.message.body == "" and posted.message.attachment_id == attachment.id
    public = posted.events[0].payload["message"]
    key = public["attachment"]["url"].rsplit("/", 1)[1]
    assert public["attachment"] == {"id": attachment.id, "content_type": "image/png", "byte_size": attachment.byte_size,
                                    "width": 800, "height": 600, "name": "screenshot.png",
                                    "url": f"/chat/attachments/{attachment.id}/{key}",
                                    "thumb_url": f"/chat/attachments/{attachment.id}/{key}?thumb=1"}
    assert check_attachment_key(attachment, key)
    assert not check_attachment_key(attachment, "0" * 32) and not check_attachment_key(attachment, None)
    assert "sha256" not in public["attachment"] and attachment.sha256 not in str(public)
    assert posted.events[-1].payload["item"]["last_message"]["text"] == "[图片]"
    async with unit_of_work(ctx.sessions) as session:
        fresh = await convs.get_conversation(session, conversation.id)
        from zaima.conversations.messages import list_messages

        [listed] = await list_messages(session, fresh)
        assert listed.attachment.sha256 == attachment.sha256  # loaded with the message
        assert (await get_attachment(session, conversation.id, attachment.id)).id == attachment.id


async def test_an_attachment_from_another_conversation_cannot_be_sent_or_fetched(ctx, chat):
    customer, conversation = chat
    agent = await make_agent(ctx)
    other = await make_conversation(ctx, await make_customer(ctx))
    foreign = await upload(ctx, other, Sender.agent(agent), image_bytes("PNG"))
    with pytest.raises(NotFound):
        await post(ctx, conversation.id, Sender.customer(customer), "看这个", attachment=foreign)
    async with unit_of_work(ctx.sessions) as session:
        with pytest.raises(NotFound):
            await get_attachment(session, conversation.id, foreign.id)


async def test_an_empty_message_needs_an_attachment(ctx, chat):
    customer, conversation = chat
    with pytest.raises(ValidationFailed):
        await post(ctx, conversation.id, Sender.customer(customer), "")
