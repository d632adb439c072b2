"""Domain errors: a stable code plus a message for people, zh-CN first and English second."""

from __future__ import annotations


def error_body(code: str, message_zh: str, message_en: str, **extra) -> dict:
    """The API's error shape, `{"error": {"code", "message", "message_en", …}}`, for every refusal."""
    return {"error": {"code": code, "message": message_zh, "message_en": message_en, **extra}}


class DomainError(Exception):
    code = "error"
    status = 400
    message_zh = "请求无法处理"
    message_en = "The request could not be processed"

    def __init__(self, message_zh: str | None = None, message_en: str | None = None, **details):
        self.message_zh = message_zh or self.message_zh
        self.message_en = message_en or self.message_en
        self.details = details
        super().__init__(self.message_en)

    def to_dict(self) -> dict:
        body = {"code": self.code, "message": self.message_zh, "message_en": self.message_en}
        if self.details:
            body["details"] = self.details
        return body


class NotFound(DomainError):
    code = "not_found"
    status = 404
    message_zh = "未找到"
    message_en = "Not found"


class ValidationFailed(DomainError):
    code = "invalid_input"
    status = 422
    message_zh = "输入有误"
    message_en = "Invalid input"


class Conflict(DomainError):
    code = "conflict"
    status = 409
    message_zh = "状态已变化，请刷新后重试"
    message_en = "The state changed; refresh and try again"


class Forbidden(DomainError):
    code = "forbidden"
    status = 403
    message_zh = "没有权限"
    message_en = "Not allowed"


class RateLimited(DomainError):
    code = "rate_limited"
    status = 429
    message_zh = "尝试次数过多，请稍后再试"
    message_en = "Too many attempts; try again later"
