"""`zaima bot eval` on the shipped case file meets the thresholds; a malformed file runs nothing."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from zaima.bot.evaluate import evaluate, load_cases
from zaima.cli import app

CASES = Path(__file__).resolve().parents[2] / "evals" / "bot_cases.jsonl"


async def test_shipped_cases_meet_the_thresholds(tmp_path):
    cases = load_cases(CASES)
    assert len(cases) >= 250
    report = await evaluate(cases, tmp_path)
    summary = report.to_dict()
    assert report.safety_violations == 0, summary["failures"]
    assert report.intent_accuracy >= 0.95, summary["failures"]
    assert report.outcome_accuracy >= 0.95, summary["failures"]


def test_malformed_file_is_rejected_with_its_line_number(tmp_path):
    good = CASES.read_text(encoding="utf-8").splitlines()[0]
    bad = json.loads(good)
    bad["expect"]["outcome"] = "teleported"
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join([good, good.replace(json.loads(good)["id"], "other-id"), json.dumps(bad)]) + "\n",
                    encoding="utf-8")
    result = CliRunner().invoke(app, ["bot", "eval", str(path), "--json"])
    assert result.exit_code == 2
    assert ":3:" in result.output and "teleported" in result.output
    assert "intent_accuracy" not in result.output  # nothing ran
    path.write_text(good + "\n{not json\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["bot", "eval", str(path)])
    assert result.exit_code == 2 and ":2:" in result.output
