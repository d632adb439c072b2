"""The `zaima` command: serve, demo, db, keys, staff, worker."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from zaima.config import ConfigError, Settings, demo_settings

app = typer.Typer(help="Zaima 在吗 — after-sales service for digital-goods stores", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations")
keys_app = typer.Typer(help="Card-key stock")
staff_app = typer.Typer(help="Staff accounts")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(staff_app, name="staff")
console = Console(soft_wrap=True)


def load_settings() -> Settings:
    """Production settings from the environment; in a demo var/ (secrets.json present), the demo's."""
    settings = Settings()
    if settings.env == "demo" or (not settings.secret_key and (settings.var_dir / "secrets.json").exists()):
        settings = demo_settings()
    try:
        settings.check()
    except ConfigError as exc:
        console.print(f"[red]配置错误 / configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc
    return settings


def _context(settings: Settings):
    from zaima.context import build_context

    return build_context(settings)


@db_app.command("upgrade")
def db_upgrade():
    """Apply all migrations."""
    from zaima.migrate import upgrade

    async def run():
        ctx = _context(load_settings())
        await upgrade(ctx.engine)
        await ctx.close()

    asyncio.run(run())
    console.print("数据库已是最新 / database is up to date")


@keys_app.command("import")
def keys_import(file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
                product: str = typer.Option(..., "--product", help="product SKU")):
    """Import card keys, one per line (or `key,password` / `account----password` pairs)."""
    from zaima.core.errors import DomainError
    from zaima.db import unit_of_work
    from zaima.migrate import upgrade
    from zaima.store import catalog, delivery, stock

    text = file.read_bytes().decode("utf-8", errors="replace")
    lines = stock.split_lines(text)

    async def run():
        ctx = _context(load_settings())
        await upgrade(ctx.engine)
        try:
            with Progress(TextColumn("[bold]导入卡密 importing"), BarColumn(), MofNCompleteColumn(),
                          console=console) as bar:
                task = bar.add_task("import", total=len(lines))
                async with unit_of_work(ctx.sessions) as session:
                    item = await catalog.get_product(session, product)
                    result = await stock.import_keys(
                        session, ctx.box, ctx.clock, item, lines, source=file.name, actor="cli",
                        progress=lambda done, total: bar.update(task, completed=done, total=total))
                    delivered = await delivery.fulfil_backorders(session, ctx, item.id)
            return result, delivered
        finally:
            await ctx.close()

    try:
        result, delivered = asyncio.run(run())
    except DomainError as exc:
        console.print(f"[red]{exc.message_zh}[/red]")
        for line in exc.details.get("lines", []):
            console.print(f"  第 {line['line']} 行 line {line['line']}: {line['reason']}")
        raise typer.Exit(1) from exc
    console.print(f"已导入 {result.imported} 条 / imported {result.imported}")
    if result.duplicates:
        shown = ", ".join(map(str, result.duplicates[:50]))
        console.print(f"[yellow]跳过重复 {len(result.duplicates)} 条 / skipped duplicates, lines: {shown}[/yellow]")
    if delivered:
        console.print(f"已为 {delivered} 个等待补货的订单发货 / delivered {delivered} waiting orders")


@staff_app.command("create")
def staff_create(username: str, role: str = typer.Option("agent"), password: str = typer.Option(
        ..., prompt=True, hide_input=True, confirmation_prompt=True)):
    """Create a staff account (agent, supervisor or admin)."""
    from zaima.core.errors import DomainError
    from zaima.db import unit_of_work
    from zaima.migrate import upgrade
    from zaima.staff import create_staff

    async def run():
        ctx = _context(load_settings())
        await upgrade(ctx.engine)
        try:
            async with unit_of_work(ctx.sessions) as session:
                await create_staff(session, ctx.clock, username, password, role)
        finally:
            await ctx.close()

    try:
        asyncio.run(run())
    except DomainError as exc:
        console.print(f"[red]{exc.message_zh}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"已创建 {username} ({role})")


WORKERS_OPTION = typer.Option(1, "--workers", "-w", min=1, max=32, envvar="ZAIMA_WORKERS",
                              help="server processes (each with its own pool and job worker; "
                                   "helps on PostgreSQL, not on SQLite)")


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _uvicorn_options(settings: Settings) -> dict:
    # uvloop and httptools come with uvicorn[standard]; the pure-Python ones are the fallback.
    # ws_max_size: a WebSocket frame over 1 MB closes the socket (1009); smaller oversized frames get
    # an error frame from the app (docs/realtime.md).
    return dict(host=settings.host, port=settings.port, log_level="warning", access_log=False, ws_max_size=1 << 20,
                loop="uvloop" if _installed("uvloop") else "asyncio",
                http="httptools" if _installed("httptools") else "h11")


def worker_app():
    """App factory for each process of `--workers N`: settings come from the same environment."""
    from zaima.app import create_app
    from zaima.logging import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_json)
    return create_app(settings, migrate=False)  # the parent migrated once, before the workers started


def _serve(settings: Settings, workers: int = 1) -> None:
    import os

    import uvicorn

    from zaima.app import create_app
    from zaima.logging import configure_logging

    configure_logging(settings.log_level, settings.log_json)
    options = _uvicorn_options(settings)
    if workers <= 1:
        uvicorn.run(create_app(settings), **options)
        return
    if not settings.redis_url:
        # Each process would hold its own sockets with its own in-process hub: a customer on one and
        # an agent on another would not hear each other until a reconnect.
        console.print("[red]多进程需要 Redis 来共享聊天消息：请设置 ZAIMA_REDIS_URL。[/red]\n"
                      "--workers > 1 needs ZAIMA_REDIS_URL so chat events reach every process.")
        raise typer.Exit(2)
    from zaima.migrate import upgrade

    async def migrate():
        ctx = _context(settings)
        try:
            await upgrade(ctx.engine)
        finally:
            await ctx.close()

    asyncio.run(migrate())
    if settings.is_demo:
        os.environ["ZAIMA_ENV"] = "demo"  # the worker processes rebuild the same demo settings
    uvicorn.run("zaima.cli:worker_app", factory=True, workers=workers, **options)


@app.command()
def serve(workers: int = WORKERS_OPTION):
    """Serve the app (migrations run on start)."""
    _serve(load_settings(), workers)


@app.command()
def demo(serve_after: bool = typer.Option(True, "--serve/--no-serve"), workers: int = WORKERS_OPTION):
    """Create (or keep) the demo store in ./var, then serve it."""
    from zaima.demo.seed import seed_demo

    settings = demo_settings()
    summary = asyncio.run(seed_demo(settings))
    base = settings.base_url
    console.print("\n[bold green]Zaima 在吗 · 演示商店已就绪 / demo store ready[/bold green]")
    console.print(f"  商店首页 Storefront:     {base}/")
    console.print(f"  订单查询 Order lookup:   {base}/lookup")
    console.print(f"  客服后台 Agent console:  {base}/console  ({summary['agent']} / {summary['agent_password']}; "
                  f"{summary['agent2']} / {summary['agent2_password']})")
    if summary.get("supervisor"):
        console.print(f"  主管账号 Supervisor:     {base}/console  ({summary['supervisor']} / "
                      f"{summary['supervisor_password']})")
    console.print(f"  API 文档 API docs:       {base}/docs")
    console.print(f"  健康检查 Health:         {base}/healthz")
    console.print(f"  运营账号 Operator login: {summary['operator']} / {summary['password']}  "
                  f"(admin API: {base}/api/v1/admin/orders)")
    for label, url in summary.get("orders", []):
        console.print(f"  {label}: {url}")
    sys.stdout.flush()
    if serve_after:
        _serve(settings, workers)


from zaima.bot.kb_cli import kb_app  # noqa: E402 - the sub-commands sit next to their implementation

app.add_typer(kb_app, name="kb")
bot_app = typer.Typer(help="客服机器人 / the support bot", no_args_is_help=True)
app.add_typer(bot_app, name="bot")


@bot_app.command("eval")
def bot_eval(file: Path = typer.Argument(..., help="case file, JSON Lines (docs: bot-policy-and-eval)"),
             as_json: bool = typer.Option(False, "--json", help="print one JSON object")):
    """Run a case file through the real bot and report intent and outcome accuracy and safety."""
    from zaima.bot.evaluate import CaseFileError, evaluate, load_cases
    from zaima.logging import configure_logging

    configure_logging("WARNING", False)
    try:
        cases = load_cases(file)
    except CaseFileError as exc:
        console.print(f"[red]用例文件有误 / malformed case file[/red] {file}:{exc.line}: {exc.reason}")
        raise typer.Exit(2) from None
    except OSError as exc:
        console.print(f"[red]无法读取 / cannot read[/red] {file}: {exc}")
        raise typer.Exit(2) from None
    report = asyncio.run(evaluate(cases))
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
        return
    for result in report.results:
        mark = "[green]✓[/green]" if result.passed else "[red]✗[/red]"
        console.print(f"{mark} {result.id}: intent {result.intent} (expected {result.expected_intent}), "
                      f"outcome {result.outcome} (expected {result.expected_outcome})"
                      + (f" [red]{'; '.join(result.violations)}[/red]" if result.violations else ""))
    console.print(f"\ncases {len(report.results)} · intent accuracy {report.intent_accuracy:.3f} · "
                  f"outcome accuracy {report.outcome_accuracy:.3f} · safety violations {report.safety_violations}")


if __name__ == "__main__":
    app()
