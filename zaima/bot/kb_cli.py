"""`zaima kb rank`: rank knowledge-base articles for a file of questions, offline (no database).

Both files are JSON Lines. Every line of both is checked before anything is ranked, so a malformed
file prints nothing on stdout: only the file, the line number and the reason on stderr (exit code 2).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

kb_app = typer.Typer(help="Knowledge base 知识库", no_args_is_help=True)

EXIT_MALFORMED = 2


@kb_app.callback()
def _group() -> None:
    """Knowledge base 知识库."""  # keeps `rank` a subcommand even while it is the only one


class MalformedLine(Exception):
    def __init__(self, path: Path, line: int, reason: str):
        self.path, self.line, self.reason = path, line, reason
        super().__init__(f"{path}:{line}: {reason}")


def _id_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _read_jsonl(path: Path, check) -> list[tuple[int, dict]]:
    """The objects of a JSON Lines file; blank lines are skipped, anything else must be valid."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MalformedLine(path, 0, f"cannot read the file: {exc.strerror or exc}") from exc
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 BOM from Windows editors
    rows = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedLine(path, number, f"not UTF-8 (byte {exc.start + 1}) 不是 UTF-8 编码") from exc
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MalformedLine(path, number, f"invalid JSON: {exc.msg} (column {exc.colno}) JSON 格式错误") from exc
        if not isinstance(row, dict):
            raise MalformedLine(path, number, "expected a JSON object 每行应为一个 JSON 对象")
        problem = check(row)
        if problem:
            raise MalformedLine(path, number, problem)
        rows.append((number, row))
    return rows


def _check_article(row: dict) -> str | None:
    if "id" not in row:
        return 'missing "id" 缺少 id'
    if not isinstance(row.get("title"), str):
        return '"title" must be a string 标题必须是字符串'
    questions = row.get("questions", [])
    if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions):
        return '"questions" must be a list of strings 问题必须是字符串列表'
    if not isinstance(row.get("answer", ""), str):
        return '"answer" must be a string 答案必须是字符串'
    return None


def _check_query(row: dict) -> str | None:
    if "id" not in row:
        return 'missing "id" 缺少 id'
    if not isinstance(row.get("text"), str):
        return '"text" must be a string 问题文本必须是字符串'
    return None


def _load(kb_path: Path, queries_path: Path) -> tuple[list[dict], list[dict]]:
    articles, seen = [], {}
    for number, row in _read_jsonl(kb_path, _check_article):
        key = _id_key(row["id"])
        if key in seen:
            raise MalformedLine(kb_path, number, f"duplicate id {key} (first on line {seen[key]}) 文章 id 重复")
        seen[key] = number
        articles.append(row)
    queries = [row for _, row in _read_jsonl(queries_path, _check_query)]
    return articles, queries


@kb_app.command("rank")
def rank(kb: Path = typer.Option(..., "--kb", help="articles, JSON Lines: {id, title, questions, answer}"),
         queries: Path = typer.Option(..., "--queries", help="questions, JSON Lines: {id, text}"),
         top: int = typer.Option(5, "--top", min=1, help="how many articles to list per question")):
    """Print one JSON line per question: {"id": ..., "ranked": [article ids, best first]}.

    Articles sharing no word with the question are not listed, so "ranked" may be shorter than --top.
    """
    from zaima.bot.kb import Ranker  # jieba and zhconv load here, not on every `zaima` command

    try:
        articles, rows = _load(kb, queries)
    except MalformedLine as exc:
        where = f"{exc.path}:{exc.line}" if exc.line else str(exc.path)
        typer.echo(f"错误 error: {where}: {exc.reason}", err=True)
        raise typer.Exit(EXIT_MALFORMED) from exc
    ranker = Ranker(articles)
    out = []
    for row in rows:
        ranked = [article_id for article_id, _ in ranker.rank(row["text"], top)]
        out.append(json.dumps({"id": row["id"], "ranked": ranked}, ensure_ascii=False))
    sys.stdout.write("".join(line + "\n" for line in out))
