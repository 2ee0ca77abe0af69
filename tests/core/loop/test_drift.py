"""Time mode: the best is measured again once its last measurement is ``--remeasure-after``
seconds old (the machine may have changed since), and replay decides the same from the trace's
stamps. The target (tests/support/busy_train.py) is a real time-mode script of 0.6 s."""

from __future__ import annotations

import json
from pathlib import Path

import git
import pytest
from click.testing import CliRunner

from arx.cli.main import cli
from arx.core.config import RunConfig
from arx.core.loop import noise
from arx.core.loop.engine import Engine
from arx.core.loop.trace import TraceRecord
from arx.core.proposers.offline import offline_proposer
from arx.core.repo.workspace import open_run

from support.repos import make_script_repo

# serial: (pytest -m serial) a CPU-bound time-mode target whose trials are judged for contention; not beside another test's load (README)
pytestmark = pytest.mark.serial

BUSY = Path(__file__).parents[2] / "support" / "busy_train.py"



def run(root, name, iterations=5, **flags):
    ws = open_run(root, {"iterations": iterations, **flags}, name=name)
    assert ws.config.time_mode
    try:
        Engine(ws, offline_proposer(ws.config)).run()
    finally:
        ws.close(remove_worktree=True)
    return [json.loads(line) for line in git.Repo(root).git.show(
        f"arx/{name}:runs/{name}/trace.jsonl").splitlines() if '"event": "trial"' in line]


def test_the_best_is_measured_again_once_its_measurement_is_old(tmp_path):
    root = make_script_repo(tmp_path / "p", BUSY)
    records = run(root, "old", remeasure_after=1.0)
    again = [r for r in records if r["kind"] == "rebaseline"]
    assert again, [(r["kind"], r["iteration"], r["finished_at"]) for r in records]
    for r in again:  # each one came after a trial stamped more than 1 s past the best's
        before = [TraceRecord(x) for x in records if x["iteration"] < r["iteration"]]
        assert noise.stale(before, r["iteration"], 1.0)
        kept = [x for x in records[:records.index(r)] if x["status"] in ("baseline", "keep")]
        assert r["config"] == kept[-1]["config"]  # the best, as it stood
    out = CliRunner().invoke(cli, ["-C", str(root), "replay", "arx/old"],
                             catch_exceptions=False)
    assert out.exit_code == 0, out.output


def test_never_when_zero_or_when_recorded_before_the_setting(tmp_path):
    root = make_script_repo(tmp_path / "p", BUSY)
    records = run(root, "never", iterations=3, remeasure_after=0)
    assert not [r for r in records if r["kind"] == "rebaseline"]
    stored = json.loads(git.Repo(root).git.show("arx/never:runs/never/config.json"))
    stored.pop("remeasure_after")
    assert RunConfig.from_json(json.dumps(stored)).remeasure_after == 0  # old runs: never
