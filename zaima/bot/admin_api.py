"""Operator API for the bot's knowledge base and the official contact registry (/api/v1/admin).

Staff read; admins write. Errors are the app's DomainError shape: {"error": {"code", "message", …}}.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from zaima.bot import contacts, knowledge
from zaima.context import AppContext
from zaima.db import unit_of_work
from zaima.models import StaffUser
from zaima.store.admin_api import current_staff, require
from zaima.web.deps import get_ctx

router = APIRouter(prefix="/api/v1/admin", tags=["bot admin"])


class ArticleIn(BaseModel):
    """A whole article (PUT replaces every field; what is left out takes its default)."""

    title: str = Field(max_length=1000)
    questions: list[str] = Field(max_length=200)
    answer: str = Field(max_length=20000)
    tags: list[str] = Field(default=[], max_length=100)
    intents: list[str] = Field(default=[], max_length=100)
    product_skus: list[str] = Field(default=[], max_length=200)
    active: bool = True


class ContactIn(BaseModel):
    kind: str = Field(max_length=16, description="phone, qq, wechat, email or url")
    value: str = Field(max_length=1000)
    label: str = Field(default="", max_length=1000)


class AnswerQuery(BaseModel):
    question: str = Field(max_length=2000)
    intent: str | None = Field(default=None, max_length=32)
    product_sku: str | None = Field(default=None, max_length=64)


@router.get("/kb/articles")
async def list_articles(active: bool | None = None, intent: str | None = None, product_sku: str | None = None,
                        ctx: AppContext = Depends(get_ctx), _: StaffUser = Depends(current_staff)):
    async with unit_of_work(ctx.sessions) as session:
        rows = await knowledge.list_articles(session, active=active, intent=intent, product_sku=product_sku)
        return {"articles": [knowledge.article_view(a) for a in rows]}


@router.post("/kb/articles", status_code=201)
async def create_article(body: ArticleIn, ctx: AppContext = Depends(get_ctx),
                         _: StaffUser = Depends(require("admin"))):
    async with unit_of_work(ctx.sessions) as session:
        article = await knowledge.create_article(session, ctx.clock, **body.model_dump())
        return knowledge.article_view(article)


@router.post("/kb/answer")
async def try_answer(body: AnswerQuery, ctx: AppContext = Depends(get_ctx), _: StaffUser = Depends(current_staff)):
    """What the bot would answer from the knowledge base (`hit` is null below the threshold)."""
    async with unit_of_work(ctx.sessions) as session:
        hit = await knowledge.answer(session, body.question, intent=body.intent, product_sku=body.product_sku)
    if hit is None:
        return {"hit": None}
    return {"hit": {"article_id": hit.article_id, "title": hit.title, "answer": hit.answer, "score": hit.score}}


@router.get("/kb/articles/{article_id}")
async def get_article(article_id: int, ctx: AppContext = Depends(get_ctx), _: StaffUser = Depends(current_staff)):
    async with unit_of_work(ctx.sessions) as session:
        return knowledge.article_view(await knowledge.get_article(session, article_id))


@router.put("/kb/articles/{article_id}")
async def replace_article(article_id: int, body: ArticleIn, ctx: AppContext = Depends(get_ctx),
                          _: StaffUser = Depends(require("admin"))):
    async def run(session):
        article = await knowledge.update_article(session, ctx.clock, article_id, **body.model_dump())
        return knowledge.article_view(article)

    return await ctx.transact(run)  # a concurrent edit of the same article loses its version check: retried


@router.delete("/kb/articles/{article_id}", status_code=204)
async def delete_article(article_id: int, ctx: AppContext = Depends(get_ctx),
                         _: StaffUser = Depends(require("admin"))):
    async with unit_of_work(ctx.sessions) as session:
        await knowledge.delete_article(session, article_id)
    return Response(status_code=204)


@router.get("/contacts")
async def list_contacts(kind: str | None = None, ctx: AppContext = Depends(get_ctx),
                        _: StaffUser = Depends(current_staff)):
    async with unit_of_work(ctx.sessions) as session:
        return {"contacts": [contacts.contact_view(c) for c in await contacts.list_contacts(session, kind)]}


@router.get("/contacts/check")
async def check_contact(kind: str, value: str, ctx: AppContext = Depends(get_ctx),
                        _: StaffUser = Depends(current_staff)):
    """For an agent asked "is this number yours?": the same check the bot makes."""
    async with unit_of_work(ctx.sessions) as session:
        result = await contacts.check(session, kind, value)
    return {"official": result.official, "kind": result.kind, "value": result.value,
            "normalized": result.normalized, "label": result.label}


@router.post("/contacts", status_code=201)
async def add_contact(body: ContactIn, ctx: AppContext = Depends(get_ctx), _: StaffUser = Depends(require("admin"))):
    async def run(session):
        return contacts.contact_view(await contacts.add_contact(session, ctx.clock, body.kind, body.value, body.label))

    return await ctx.transact(run)  # two admins adding the same contact: the loser's retry says Conflict


@router.delete("/contacts/{contact_id}", status_code=204)
async def delete_contact(contact_id: int, ctx: AppContext = Depends(get_ctx),
                         _: StaffUser = Depends(require("admin"))):
    async with unit_of_work(ctx.sessions) as session:
        await contacts.delete_contact(session, contact_id)
    return Response(status_code=204)
