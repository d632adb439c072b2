"""Optional rephrasing of knowledge-base answers by a language model (OpenAI-compatible
`POST {ZAIMA_LLM_BASE_URL}/chat/completions`). Off unless configured.

The model only ever sees the customer's question and the store's own article text: never order
data, never a card key. It cannot decide or do anything: the policy engine has already chosen the
article. Whatever goes wrong (timeout, error, an answer that adds links or numbers the article does
not have) the article's own text is used.
"""

from __future__ import annotations

import re

import httpx
import structlog

from zaima.core.http import PooledClient

log = structlog.get_logger("zaima.bot.llm")

SYSTEM = ("你是数字商品店铺的在线客服。把【资料】改写成给顾客的一段自然、礼貌、简洁的简体中文回复，"
          "只用资料里的事实，不要添加任何资料里没有的时间、金额、链接、联系方式或承诺。")
FACTS = re.compile(r"https?://\S+|\d+(?:[.:：]\d+)?")


def _adds_facts(original: str, rewritten: str) -> bool:
    """True when the rewrite has a link or a number the article does not have."""
    known = set(FACTS.findall(original))
    return any(item not in known for item in FACTS.findall(rewritten))


_HTTP = PooledClient(timeout=30)  # each call sets the configured timeout


async def rephrase(settings, question: str, answer: str) -> str:
    if not settings.llm_base_url:
        return answer
    body = {"model": settings.llm_model, "temperature": 0.3, "max_tokens": 400,
            "messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": f"【顾客问题】{question[:500]}\n【资料】{answer}"}]}
    headers = {"Authorization": f"Bearer {settings.llm_api_key}"} if settings.llm_api_key else {}
    try:
        response = await _HTTP.get().post(settings.llm_base_url.rstrip("/") + "/chat/completions", json=body,
                                          headers=headers, timeout=settings.llm_timeout_seconds)
        response.raise_for_status()
        text = response.json()["choices"][0]["message"]["content"].strip()
    except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
        log.warning("llm_rephrase_failed", error=str(exc)[:200])
        return answer
    if not text or len(text) > 3 * len(answer) + 200 or _adds_facts(answer, text):
        log.info("llm_rephrase_rejected", length=len(text))
        return answer
    return text
