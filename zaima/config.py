"""Typed settings, all read from the environment with the ZAIMA_ prefix."""

from __future__ import annotations

import base64
import json
import secrets
from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEMO_SECRETS_FILE = "secrets.json"


class ConfigError(RuntimeError):
    """Settings that cannot run safely (e.g. a production start without secrets)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZAIMA_", env_file=".env", extra="ignore")

    env: str = "production"  # "demo" | "test" | "production"
    var_dir: Path = Path("./var")
    database_url: str = ""  # default: sqlite file under var_dir
    host: str = "127.0.0.1"
    port: int = 8000
    public_base_url: str = ""  # how the outside world (gateway, supplier) reaches us
    log_json: bool = False
    log_level: str = "INFO"
    # FastAPI's native OpenTelemetry (traces, metrics, logs to the process's global providers, e.g. under
    # `opentelemetry-instrument`). Off: then no request pays for asking whether a provider is configured.
    otel: bool = False

    secret_key: str = ""  # signs order access tokens and cookies
    card_key_encryption_key: str = ""  # base64 of 32 bytes (AES-256-GCM)

    # 易支付 (epay V1)
    epay_gateway: str = ""  # base URL, e.g. https://pay.example.com/
    epay_pid: str = ""
    epay_key: str = ""
    epay_refund_enabled: bool = False  # api.php?act=refund supported by the gateway
    epay_timeout_seconds: float = 10.0

    # Direct recharge supplier
    supplier_base_url: str = ""
    supplier_app_id: str = ""
    supplier_secret: str = ""

    order_ttl_minutes: int = 15
    worker_enabled: bool = True
    worker_poll_seconds: float = 1.0

    # Demo-only simulated gateway and supplier, mounted inside the app.
    demo_gateway: bool = False
    demo_supplier: bool = False

    # Realtime: empty means the in-process hub (one node); redis://… shares events across nodes.
    redis_url: str = ""
    # Redis pub/sub channels ignore the database number: deployments sharing one Redis need distinct prefixes.
    redis_prefix: str = "zaima:"
    # Conversations and the widget.
    widget_identity_secret: str = ""  # HMAC-SHA256 key for host sites that sign their user ids
    widget_identity_window_seconds: int = 300  # older widget signatures are rejected (no replay)
    customer_token_days: int = 30  # how long a device keeps its conversation history
    order_context_minutes: int = 120  # lifetime of the signed order context the order page hands out
    attachment_max_bytes: int = 5 * 1024 * 1024
    message_max_chars: int = 4000
    customer_frames_per_second: float = 20.0  # per customer socket, the same again as a burst
    # The bot answers conversations nobody has taken yet (status "bot").
    bot_enabled: bool = True
    # Optional language model (OpenAI-compatible) that may rephrase knowledge-base answers. Off when
    # empty; decisions and actions never depend on it, and it never sees order data or card keys.
    llm_base_url: str = ""
    llm_api_key: str = ""
    llm_model: str = "gpt-4o-mini"
    llm_timeout_seconds: float = 3.0

    # Outbound e-mail (off-hours ticket notices, satisfaction surveys). Off when the host is empty.
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_from: str = "Zaima 客服 <support@localhost>"
    smtp_security: str = "starttls"  # "starttls" | "tls" (implicit, port 465) | "none" (local relays, tests)
    smtp_timeout_seconds: float = 10.0
    # Service: how often the SLA/queue sweep runs, and how long an agent's presence outlives its socket.
    service_sweep_seconds: float = 15.0

    lookup_rate_per_ip: int = Field(default=10, description="order lookups per IP per 10 minutes")
    lookup_rate_per_order: int = Field(default=5, description="failed lookups per order per 10 minutes")

    @property
    def is_demo(self) -> bool:
        return self.env == "demo"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.var_dir / 'zaima.db').as_posix()}"

    @property
    def base_url(self) -> str:
        return (self.public_base_url or f"http://{self.host}:{self.port}").rstrip("/")

    @cached_property
    def encryption_key_bytes(self) -> bytes:
        raw = base64.b64decode(self.card_key_encryption_key)
        if len(raw) != 32:
            raise ConfigError("ZAIMA_CARD_KEY_ENCRYPTION_KEY must be base64 of exactly 32 bytes")
        return raw

    def check(self) -> None:
        """Refuse to run without real secrets."""
        missing = [
            name
            for name, value in (
                ("ZAIMA_SECRET_KEY", self.secret_key),
                ("ZAIMA_CARD_KEY_ENCRYPTION_KEY", self.card_key_encryption_key),
            )
            if not value
        ]
        if missing:
            raise ConfigError(
                "missing required settings: " + ", ".join(missing) + " (run `zaima demo` for a local demo, "
                "or set them in the environment)"
            )
        if len(self.secret_key) < 16:
            raise ConfigError("ZAIMA_SECRET_KEY must be at least 16 characters")
        self.encryption_key_bytes  # noqa: B018 - validates the key


def new_secret_values() -> dict[str, str]:
    return {
        "secret_key": secrets.token_urlsafe(32),
        "card_key_encryption_key": base64.b64encode(secrets.token_bytes(32)).decode(),
        "epay_key": secrets.token_hex(16),
        "supplier_secret": secrets.token_hex(16),
    }


def demo_settings(**overrides) -> Settings:
    """Settings for `zaima demo`: secrets generated once into var/secrets.json, demo services on."""
    base = Settings(**overrides)
    base.var_dir.mkdir(parents=True, exist_ok=True)
    path = base.var_dir / DEMO_SECRETS_FILE
    if path.exists():
        stored = json.loads(path.read_text())
    else:
        stored = new_secret_values()
        path.write_text(json.dumps(stored, indent=2))
        path.chmod(0o600)
    url = base.base_url
    values = {
        "env": "demo",
        "demo_gateway": True,
        "demo_supplier": True,
        "epay_gateway": base.epay_gateway or f"{url}/demo-gateway/",
        "epay_pid": base.epay_pid or "1000",
        "epay_refund_enabled": True,
        "supplier_base_url": base.supplier_base_url or f"{url}/demo-supplier",
        "supplier_app_id": base.supplier_app_id or "zaima-demo",
    }
    for key, value in stored.items():
        if not getattr(base, key):
            values[key] = value
    return base.model_copy(update=values)
