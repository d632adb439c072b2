"""The store's knowledge base (知识库): validated articles in the database, and `answer()` for the bot.

Retrieval is zaima.bot.kb's Ranker over the active articles, built once per process and database and
rebuilt when the articles change: the cache key is an aggregate the database answers in one cheap
query (count, max(updated_at), max(id), sum(version); every update bumps version), so a change made by
another process is seen on its next question. Writes in this process also bump a local generation,
which covers a change made within the same clock tick (a frozen test clock).
"""

from __future__ import annotations

import asyncio
import time
import unicodedata
import weakref
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from zaima.bot.kb import DEFAULT_THRESHOLD, Ranker
from zaima.core.errors import NotFound, ValidationFailed
from zaima.db import on_commit
from zaima.models import KbArticle, Product
from zaima.models.bot import INTENT_LABELS

TITLE_MAX = 100
ANSWER_MAX = 4000
QUESTION_MAX = 200
QUESTIONS_MAX = 50
TAG_MAX = 20
TAGS_MAX = 20

# How much a link to the conversation's intent or product counts (multiplies the retrieval score).
INTENT_BOOST = 1.2
PRODUCT_BOOST = 1.3
# An article written for other products than the one the customer bought: still possible, but its
# instructions are probably not the ones they need.
OTHER_PRODUCT_FACTOR = 0.6


@dataclass(frozen=True)
class KbHit:
    article_id: int
    title: str
    answer: str
    score: float  # 0–1, after the intent/product preference
    intents: tuple[str, ...]
    product_skus: tuple[str, ...]


# --- validation -------------------------------------------------------------------------------------

def _clean(text: Any, field: str, max_chars: int, name: tuple[str, str], *, multiline: bool = False) -> str:
    if not isinstance(text, str):
        raise ValidationFailed(f"{name[0]}必须是文本", f"the {name[1]} must be text", field=field)
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    allowed = {"\n", "\t"} if multiline else set()
    if any(unicodedata.category(ch) == "Cc" and ch not in allowed for ch in text):
        raise ValidationFailed(f"{name[0]}包含不可见的控制字符", f"the {name[1]} contains control characters",
                               field=field)
    text = text.strip() if multiline else " ".join(text.split())
    if not 1 <= len(text) <= max_chars:
        raise ValidationFailed(f"{name[0]}需为 1–{max_chars} 个字（当前 {len(text)} 个）",
                               f"the {name[1]} must be 1–{max_chars} characters (it has {len(text)})",
                               field=field, max_chars=max_chars)
    return text


def _list(values: Any, field: str, name: tuple[str, str], most: int, item_max: int) -> list[str]:
    if values is None:
        return []
    if not isinstance(values, list | tuple):
        raise ValidationFailed(f"{name[0]}必须是列表", f"{name[1]} must be a list", field=field)
    result: list[str] = []
    for value in values:
        value = _clean(value, field, item_max, name)
        if value not in result:  # duplicates dropped, first order kept
            result.append(value)
    if len(result) > most:
        raise ValidationFailed(f"{name[0]}最多 {most} 个", f"at most {most} {name[1]}", field=field)
    return result


async def _validated(session: AsyncSession, *, title, questions, answer, tags, intents, product_skus) -> dict:
    values = {
        "title": _clean(title, "title", TITLE_MAX, ("标题", "title")),
        "questions": _list(questions, "questions", ("问题", "questions"), QUESTIONS_MAX, QUESTION_MAX),
        "answer": _clean(answer, "answer", ANSWER_MAX, ("答案", "answer"), multiline=True),
        "tags": _list(tags, "tags", ("标签", "tags"), TAGS_MAX, TAG_MAX),
        "intents": _list(intents, "intents", ("意图", "intents"), len(INTENT_LABELS), 32),
        "product_skus": _list(product_skus, "product_skus", ("商品", "product SKUs"), 100, 64),
    }
    if not values["questions"]:
        raise ValidationFailed("至少填写一个问题（顾客会怎么问）", "give at least one question (how customers ask it)",
                               field="questions")
    unknown = [i for i in values["intents"] if i not in INTENT_LABELS]
    if unknown:
        raise ValidationFailed(f"未知的意图：{'、'.join(unknown)}", f"unknown intents: {', '.join(unknown)}",
                               field="intents", allowed=list(INTENT_LABELS))
    if values["product_skus"]:
        known = set(await session.scalars(select(Product.sku).where(Product.sku.in_(values["product_skus"]))))
        missing = [sku for sku in values["product_skus"] if sku not in known]
        if missing:
            raise ValidationFailed(f"商品不存在：{'、'.join(missing)}", f"no such products: {', '.join(missing)}",
                                   field="product_skus")
    return values


# --- articles ---------------------------------------------------------------------------------------

_generation = 0


def _changed(session: AsyncSession) -> None:
    """Invalidate this process's index now and again once the change commits (a reader in between
    may have rebuilt it from the data before the commit)."""
    global _generation
    _generation += 1

    def bump() -> None:
        global _generation
        _generation += 1

    on_commit(session, bump)


async def create_article(session: AsyncSession, clock, *, title: str, questions: list[str], answer: str,
                         tags: list[str] | None = None, intents: list[str] | None = None,
                         product_skus: list[str] | None = None, active: bool = True) -> KbArticle:
    values = await _validated(session, title=title, questions=questions, answer=answer, tags=tags,
                              intents=intents, product_skus=product_skus)
    article = KbArticle(**values, active=bool(active), created_at=clock.now(), updated_at=clock.now())
    session.add(article)
    await session.flush()
    _changed(session)
    return article


async def get_article(session: AsyncSession, article_id: int) -> KbArticle:
    article = await session.get(KbArticle, article_id) if isinstance(article_id, int) else None
    if article is None:
        raise NotFound("未找到该知识库文章", "knowledge-base article not found")
    return article


_UNSET: Any = object()


async def update_article(session: AsyncSession, clock, article_id: int, *, title: str = _UNSET,
                         questions: list[str] = _UNSET, answer: str = _UNSET, tags: list[str] = _UNSET,
                         intents: list[str] = _UNSET, product_skus: list[str] = _UNSET,
                         active: bool = _UNSET) -> KbArticle:
    """Change the given fields (the others keep their values), validated as on creation."""
    article = await get_article(session, article_id)
    current = {"title": article.title, "questions": article.questions, "answer": article.answer,
               "tags": article.tags, "intents": article.intents, "product_skus": article.product_skus}
    given = {"title": title, "questions": questions, "answer": answer, "tags": tags, "intents": intents,
             "product_skus": product_skus}
    values = await _validated(session, **{k: current[k] if v is _UNSET else v for k, v in given.items()})
    for key, value in values.items():
        setattr(article, key, value)  # lists are replaced, never mutated in place
    if active is not _UNSET:
        article.active = bool(active)
    article.updated_at = clock.now()
    await session.flush()
    _changed(session)
    return article


async def delete_article(session: AsyncSession, article_id: int) -> None:
    await session.delete(await get_article(session, article_id))
    await session.flush()
    _changed(session)


async def list_articles(session: AsyncSession, *, active: bool | None = None, intent: str | None = None,
                        product_sku: str | None = None) -> list[KbArticle]:
    query = select(KbArticle).order_by(KbArticle.id)
    if active is not None:
        query = query.where(KbArticle.active.is_(active))
    rows = list(await session.scalars(query))
    # JSON list membership is filtered here: it is portable, and a knowledge base is small.
    if intent:
        rows = [a for a in rows if intent in a.intents]
    if product_sku:
        rows = [a for a in rows if product_sku in a.product_skus]
    return rows


def article_view(article: KbArticle) -> dict:
    return {"id": article.id, "title": article.title, "questions": list(article.questions),
            "answer": article.answer, "tags": list(article.tags), "intents": list(article.intents),
            "product_skus": list(article.product_skus), "active": article.active,
            "created_at": article.created_at.isoformat(), "updated_at": article.updated_at.isoformat()}


# --- answering --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Entry:
    id: int
    title: str
    answer: str
    intents: tuple[str, ...]
    product_skus: tuple[str, ...]


@dataclass(frozen=True)
class _Index:
    key: tuple
    ranker: Ranker
    entries: tuple[_Entry, ...]


# One index per database (engine) in this process.
_indexes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
RECHECK_SECONDS = 1.0  # another node's article edit shows here within this long


async def _index(session: AsyncSession) -> _Index:
    engine = session.get_bind()
    cached = _indexes.get(engine)
    last = _checked.get(engine)
    if cached is not None and last is not None and last[0] == _generation \
            and time.monotonic() - last[1] < RECHECK_SECONDS:
        return cached  # edits made in this process bump _generation and are seen at once
    _checked[engine] = (_generation, time.monotonic())
    aggregate = (await session.execute(select(
        func.count(KbArticle.id), func.max(KbArticle.updated_at), func.max(KbArticle.id),
        func.sum(KbArticle.version)))).one()
    key = (_generation, *aggregate)
    if cached is not None and cached.key == key:
        return cached
    articles = list(await session.scalars(select(KbArticle).where(KbArticle.active.is_(True))
                                          .order_by(KbArticle.id)))
    entries = tuple(_Entry(a.id, a.title, a.answer, tuple(a.intents), tuple(a.product_skus)) for a in articles)
    # Tags are searched like the title: short, chosen words.
    docs = [{"id": a.id, "title": " ".join([a.title, *a.tags]), "questions": a.questions, "answer": a.answer}
            for a in articles]
    # Tokenising every article (and jieba's first dictionary load) is CPU work: off the event loop.
    ranker = await asyncio.to_thread(Ranker, docs)
    index = _Index(key, ranker, entries)
    _indexes[engine] = index
    return index


async def answer(session: AsyncSession, question: str, *, intent: str | None = None, product_sku: str | None = None,
                 threshold: float = DEFAULT_THRESHOLD) -> KbHit | None:
    """The best active article for a customer's question, or None when nothing scores `threshold`.

    Articles linked to the conversation's intent or to the product the customer bought are preferred;
    an article written only for other products counts less.
    """
    if not question or not question.strip():
        return None
    index = await _index(session)
    if not index.entries:
        return None
    best: tuple[float, int] | None = None
    for position, score in enumerate(index.ranker.scores(question)):
        if score <= 0:
            continue
        entry = index.entries[position]
        if intent and intent in entry.intents:
            score *= INTENT_BOOST
        if entry.product_skus and product_sku:
            score *= PRODUCT_BOOST if product_sku in entry.product_skus else OTHER_PRODUCT_FACTOR
        if best is None or score > best[0]:
            best = (score, position)
    if best is None or best[0] < threshold:
        return None
    entry = index.entries[best[1]]
    return KbHit(entry.id, entry.title, entry.answer, round(min(1.0, best[0]), 6), entry.intents, entry.product_skus)


def warm_up() -> None:
    """Load jieba's dictionary now (about a second), e.g. at start-up in a thread, instead of on the
    first customer question."""
    import jieba

    jieba.initialize()
