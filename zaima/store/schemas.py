"""Request bodies of the store API."""

from __future__ import annotations

from pydantic import BaseModel, Field


class OrderCreate(BaseModel):
    sku: str = Field(max_length=64)
    quantity: int = Field(default=1, ge=1, le=1000)
    contact: str = Field(max_length=200)
    query_password: str | None = Field(default=None, max_length=64)
    inputs: dict[str, str] | None = None
    pay_type: str = Field(default="alipay", max_length=16)


class OrderLookup(BaseModel):
    order_no: str = Field(max_length=40)
    contact: str | None = Field(default=None, max_length=200)
    query_password: str | None = Field(default=None, max_length=64)


class InputField(BaseModel):
    name: str = Field(max_length=32)
    label: str = Field(default="", max_length=50)
    label_en: str = Field(default="", max_length=50)
    pattern: str | None = Field(default=None, max_length=200)
    hint: str = Field(default="", max_length=200)
    options: list[str] | None = Field(default=None, max_length=100)
    required: bool = True


class ProductIn(BaseModel):
    sku: str = Field(max_length=64)
    kind: str
    name: str = Field(min_length=1, max_length=200)
    name_en: str = Field(default="", max_length=200)
    description: str = ""
    usage_instructions: str = ""
    price: str = Field(max_length=20, description="price in yuan, e.g. \"30.00\"")
    input_fields: list[InputField] = []
    supplier_sku: str | None = Field(default=None, max_length=64)
    replaceable: bool | None = None
    replacement_window_hours: int | None = Field(default=None, ge=0, le=24 * 365)
    auto_refund: bool | None = None
    min_quantity: int = Field(default=1, ge=1, le=1000)
    max_quantity: int = Field(default=10, ge=1, le=1000)
    allow_backorder: bool = True
    active: bool = True
    sort_order: int = Field(default=0, ge=-1_000_000, le=1_000_000)


class ProductPatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    name_en: str | None = Field(default=None, max_length=200)
    description: str | None = None
    usage_instructions: str | None = None
    price: str | None = Field(default=None, max_length=20)
    input_fields: list[InputField] | None = None
    supplier_sku: str | None = Field(default=None, max_length=64)
    replaceable: bool | None = None
    replacement_window_hours: int | None = Field(default=None, ge=0, le=24 * 365)
    auto_refund: bool | None = None
    min_quantity: int | None = Field(default=None, ge=1, le=1000)
    max_quantity: int | None = Field(default=None, ge=1, le=1000)
    allow_backorder: bool | None = None
    active: bool | None = None
    sort_order: int | None = Field(default=None, ge=-1_000_000, le=1_000_000)


class RefundIn(BaseModel):
    reason: str = Field(min_length=1, max_length=1000)
    idempotency_key: str = Field(min_length=8, max_length=100)
    quantity: int | None = Field(default=None, ge=1)


class QuarantineIn(BaseModel):
    reason: str = Field(min_length=1, max_length=300)


class AfterSalesIn(BaseModel):
    replaceable: bool | None = None
    replacement_window_hours: int | None = Field(default=None, ge=0, le=24 * 365)
    auto_refund: bool | None = None
    recharge_handoff_minutes: int | None = Field(default=None, ge=1, le=24 * 60)


class SettleRechargeIn(BaseModel):
    result: str = Field(pattern="^(succeeded|failed)$", description="what the supplier confirmed")
    note: str = Field(min_length=1, max_length=500)
