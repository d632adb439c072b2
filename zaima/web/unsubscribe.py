"""The unsubscribe link of mail a customer did not ask for (/mail/unsubscribe/{token}; see zaima.service.mail).

A GET shows what the link stops, with a button, and changes nothing: mail scanners open links. A POST (the
button, or a mail client's one-click request from the List-Unsubscribe header, RFC 8058, whose body is
`List-Unsubscribe=One-Click`) records the opt-out; repeating it is harmless.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from zaima.context import AppContext
from zaima.db import unit_of_work
from zaima.service import mail
from zaima.web.deps import get_ctx
from zaima.web.pages import render, service_facts

router = APIRouter(dependencies=[Depends(service_facts)])  # the footer's service hours


def _page(request: Request, view: str, *, kind: str = "", token: str = "", status: int = 200) -> HTMLResponse:
    return render(request, "unsubscribe.html", status=status, private=True, view=view, token=token,
                  kind_text=mail.OPT_OUT_KINDS.get(kind, ("", "")))


@router.get("/mail/unsubscribe/{token}", response_class=HTMLResponse, include_in_schema=False)
async def unsubscribe_page(token: str, request: Request, ctx: AppContext = Depends(get_ctx)):
    found = mail.read_unsubscribe_token(ctx, token)
    if found is None:
        return _page(request, "invalid", status=404)
    async with unit_of_work(ctx.sessions) as session:
        done = await mail.opted_out(session, *found)
    return _page(request, "done" if done else "confirm", kind=found[1], token=token)


@router.post("/mail/unsubscribe/{token}", response_class=HTMLResponse, include_in_schema=False)
async def unsubscribe(token: str, request: Request, ctx: AppContext = Depends(get_ctx)):
    found = mail.read_unsubscribe_token(ctx, token)
    if found is None:
        return _page(request, "invalid", status=404)
    try:
        one_click = (await request.form()).get("List-Unsubscribe") == "One-Click"
    except Exception:  # an unreadable body: the signed link alone is the request
        one_click = False
    digest, kind = found
    await ctx.transact(lambda session: mail.opt_out(session, ctx, digest, kind, "one_click" if one_click else "page"))
    return _page(request, "done", kind=kind)
