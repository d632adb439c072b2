"""Image attachments (screenshots as evidence): checked by decoding the bytes, stored once per content.

The type is what Pillow finds in the bytes (PNG, JPEG, WEBP, GIF), never the file name or the declared
type. Files live under settings.var_dir / "attachments" / <yyyy>/<mm>/<sha256>.<ext>, with a thumbnail
next to them; identical bytes reuse the file already on disk. Files are written to a temporary name and
renamed into place, so a crash never leaves half a file under a real name. A file written for a
transaction that then rolls back stays on disk unreferenced (content-addressed, so harmless).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image, ImageOps, UnidentifiedImageError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from zaima.conversations.conversations import ConversationClosed
from zaima.conversations.senders import Sender
from zaima.core.errors import DomainError, Forbidden, NotFound
from zaima.models import Attachment, Conversation

FORMATS = {"PNG": ("image/png", "png"), "JPEG": ("image/jpeg", "jpg"), "WEBP": ("image/webp", "webp"),
           "GIF": ("image/gif", "gif")}
MAX_PIXELS = 40_000_000  # decompression-bomb guard: a 5 MB PNG can claim billions of pixels
THUMBNAIL_SIZE = 320
UPLOADERS = ("customer", "agent")


class AttachmentTooLarge(DomainError):
    code = "attachment_too_large"
    status = 413


class NotAnImage(DomainError):
    code = "attachment_not_an_image"
    status = 415
    message_zh = "只能上传 PNG、JPEG、WEBP 或 GIF 图片，该文件无法识别为图片"
    message_en = "Only PNG, JPEG, WEBP or GIF images can be uploaded; this file is not a readable image"


class ImageTooBig(DomainError):
    code = "attachment_too_many_pixels"
    status = 413


def attachments_root(settings) -> Path:
    return Path(settings.var_dir) / "attachments"


def _size_text(limit: int) -> str:
    mib = limit / (1024 * 1024)
    if mib >= 1:
        return f"{mib:g} MB" if mib == int(mib) else f"{mib:.1f} MB"
    return f"{max(1, limit // 1024)} KB"


@dataclass
class _Processed:
    content_type: str
    ext: str
    width: int
    height: int
    thumbnail: bytes
    thumbnail_ext: str


def _too_many_pixels(width: int, height: int) -> ImageTooBig:
    size = f"（{width}×{height}）" if width else ""
    return ImageTooBig(f"图片尺寸过大{size}，请缩小到 4000 万像素以内再上传",
                       "the image has too many pixels" + (f" ({width}×{height})" if width else "")
                       + "; the limit is 40 megapixels", max_pixels=MAX_PIXELS)


def _decode(data: bytes) -> _Processed:
    """Open, fully decode and thumbnail the image. Blocking (CPU): run in a thread."""
    try:
        # Only the four plugins we accept ever parse the bytes: less code exposed to hostile files.
        with Image.open(io.BytesIO(data), formats=list(FORMATS)) as image:
            if image.format not in FORMATS:
                raise NotAnImage()
            # Checked from the header, before a single pixel is decoded.
            if image.width * image.height > MAX_PIXELS:
                raise _too_many_pixels(image.width, image.height)
            content_type, ext = FORMATS[image.format]
            image.load()  # decodes the (first frame's) data: truncated or junk data fails here
            shown = ImageOps.exif_transpose(image)  # a phone photo's EXIF rotation, as people see it
            width, height = shown.size
            thumbnail, thumbnail_ext = _thumbnail(shown)
    except Image.DecompressionBombError as exc:  # Pillow's own, larger limit, hit while opening
        raise _too_many_pixels(0, 0) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise NotAnImage() from exc
    return _Processed(content_type, ext, width, height, thumbnail, thumbnail_ext)


def _thumbnail(image: Image.Image) -> tuple[bytes, str]:
    small = image.copy()
    small.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    out = io.BytesIO()
    has_alpha = small.mode in ("RGBA", "LA", "PA") or (small.mode == "P" and "transparency" in small.info)
    if has_alpha:
        small.convert("RGBA").save(out, "PNG", optimize=True)
        return out.getvalue(), "png"
    small.convert("RGB").save(out, "JPEG", quality=82, optimize=True)
    return out.getvalue(), "jpg"


def _write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same directory and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".upload-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _store_files(root: Path, relative: str, data: bytes, thumbnail_relative: str, thumbnail: bytes) -> None:
    # Thumbnail first: once the original exists under its real name, both are complete.
    if not (root / thumbnail_relative).exists():
        _write_atomically(root / thumbnail_relative, thumbnail)
    if not (root / relative).exists():
        _write_atomically(root / relative, data)


def _clean_name(filename: str | None) -> str:
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    name = "".join(ch for ch in unicodedata.normalize("NFC", name) if ch.isprintable())
    return name[:200]


async def store_image(session: AsyncSession, settings, clock, conversation: Conversation, uploader: Sender,
                      data: bytes, filename: str | None = None) -> Attachment:
    """Check, store and record an uploaded image. The name is kept only as a label."""
    if uploader.kind not in UPLOADERS:
        raise Forbidden("只有顾客和客服可以上传图片", "only customers and agents can upload images")
    if conversation.status == "closed":
        raise ConversationClosed()
    limit = settings.attachment_max_bytes
    if len(data) > limit:
        raise AttachmentTooLarge(f"图片不能超过 {_size_text(limit)}", f"images must be at most {_size_text(limit)}",
                                 max_bytes=limit, size=len(data))
    if not data:
        raise NotAnImage("文件是空的，请重新选择图片", "the file is empty; choose the image again")
    processed = await asyncio.to_thread(_decode, data)
    digest = hashlib.sha256(data).hexdigest()
    known = (await session.execute(
        select(Attachment.storage_path, Attachment.thumbnail_path).where(Attachment.sha256 == digest).limit(1)
    )).first()
    root = attachments_root(settings)
    if known is not None and (root / known[0]).exists() and (root / known[1]).exists():
        relative, thumbnail_relative = known
    else:
        now = clock.now()
        folder = f"{now:%Y}/{now:%m}"
        relative = f"{folder}/{digest}.{processed.ext}"
        thumbnail_relative = f"{folder}/{digest}.thumb.{processed.thumbnail_ext}"
        await asyncio.to_thread(_store_files, root, relative, data, thumbnail_relative, processed.thumbnail)
    attachment = Attachment(conversation_id=conversation.id, uploader_kind=uploader.kind, uploader_id=uploader.id,
                            original_name=_clean_name(filename), content_type=processed.content_type,
                            byte_size=len(data), sha256=digest, width=processed.width, height=processed.height,
                            storage_path=relative, thumbnail_path=thumbnail_relative, created_at=clock.now())
    session.add(attachment)
    await session.flush()
    return attachment


async def get_attachment(session: AsyncSession, conversation_id: int, attachment_id: int) -> Attachment:
    """An attachment of this conversation (check the conversation's access first)."""
    attachment = await session.get(Attachment, attachment_id) if isinstance(attachment_id, int) else None
    if attachment is None or attachment.conversation_id != conversation_id:
        raise NotFound("附件不存在", "attachment not found")
    return attachment


def attachment_file(settings, attachment: Attachment, thumbnail: bool = False) -> Path:
    """The file to serve; always inside the attachments directory."""
    root = attachments_root(settings).resolve()
    path = (root / (attachment.thumbnail_path if thumbnail else attachment.storage_path)).resolve()
    if not path.is_relative_to(root):
        raise NotFound("附件不存在", "attachment not found")
    return path
