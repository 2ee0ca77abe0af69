"""`arx init` on scripts nobody here wrote (--only, --lock, --metric-regex, refusals that name
what the script uses instead), `arx check` and `arx rm`, through click on real repositories."""

from __future__ import annotations

import io
import subprocess
import sys
import time

import git
import pytest
import tomllib
from click.testing import CliRunner
from rich.console import Console
from rich.table import Table

from arx.cli.main import cli
from arx.cli.progress import RichReporter, add_row
from arx.core.direction import infer
from arx.core.levels.fence import find_bwrap
from arx.core.loop.progress import RunProgress
from arx.core.loop.trace import TraceRecord
from arx.core.repo.lock import RunLock
from arx.core.repo.workspace import open_run
from arx.core.states import TrialState

from support.repos import git_repo
from support.styles import ARGPARSE


def arx(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def script_repo(tmp_path, text):
    repo = git_repo(tmp_path)
    (tmp_path / "train.py").write_text(text)
    repo.index.add(["train.py"])
    repo.index.commit("mine")
    return tmp_path


def init(root, *extra):
    return arx("init", str(root), "--target", "train.py", "--command",
               f"{sys.executable} train.py", "--metric", "loss", *extra)


def test_only_lock_and_metric_regex(tmp_path):
    root = script_repo(tmp_path, ARGPARSE)
    out = init(root, "--only", "--lr", "--only", "--gamma", "--metric-regex", r"^loss: (\S+)")
    assert out.exit_code == 0, out.output
    doc = tomllib.loads((root / "arx.toml").read_text())
    assert doc["target"]["metric_regex"] == r"^loss: (\S+)"
    assert set(doc["params"]["locked"]) == {"--batch-size", "--test-batch-size", "--epochs",
                                            "--no-cuda", "--seed", "--log-interval",
                                            "--save-model"}
    assert "--batch-size       not named by --only" in out.output
    assert "tunable (2):" in out.output and "--lr" in out.output
    assert "next: cd" in out.output and "--budget" not in out.output  # no budget constant
    out = arx("-C", str(root), "check")
    assert out.exit_code == 0, out.output
    assert "set by arx" not in out.output and "loss = 1." in out.output
    # which of the runner worker's fences held here, as the worker itself reports them
    runner = next(line for line in out.output.splitlines() if line.startswith("  runner"))
    if find_bwrap() is not None:  # bwrap's namespaces: no network, arx out of sight
        assert "bubblewrap: " in runner and "no network" in runner.split(" held")[0]
        assert "own PID namespace" in runner.split(" held")[0]
    else:
        assert "native layers (" in runner and " held" in runner


def test_unknown_names_and_scripts_with_nothing_to_tune_are_refused_clearly(tmp_path):
    root = script_repo(tmp_path / "a", ARGPARSE)
    out = init(root, "--lock", "--lrr")
    assert out.exit_code != 0 and "did you mean --lr" in out.output
    yaml_script = ("import yaml\ncfg = yaml.safe_load(open('config.yaml'))\n"
                   "print('loss:', cfg['lr'])\n")
    root = script_repo(tmp_path / "b", yaml_script)
    out = init(root)
    assert out.exit_code != 0
    assert "nothing arx can tune" in out.output
    assert "a YAML file (yaml.safe_load) at line 2" in out.output
    assert not (root / "arx.toml").exists()


ACCURACY_SCRIPT = "LR = 0.1\nDEPTH = 2\nprint('---')\nprint(f'{NAME}: {0.9 - abs(LR - 0.3):.4f}')\n"


@pytest.mark.parametrize("name, direction, word", [
    ("val_acc", "max", "acc"), ("episodeReward", "max", "reward"), ("top1_error", "min", "error"),
])
def test_the_direction_comes_from_the_metric_name_and_is_said(tmp_path, name, direction, word):
    root = script_repo(tmp_path, ACCURACY_SCRIPT.replace("{NAME}", name))
    out = arx("init", str(root), "--target", "train.py", "--command",
              f"{sys.executable} train.py", "--metric", name)
    assert out.exit_code == 0, out.output
    assert tomllib.loads((root / "arx.toml").read_text())["target"]["direction"] == direction
    assert f"arx: direction {direction}, from the metric's name: '{word}' means" in out.output
    check = arx("-C", str(root), "check")
    assert check.exit_code == 0 and f"direction   {direction} ('{word}' means" in check.output


@pytest.mark.parametrize("name, direction, word", [
    ("accuracy", "max", "accuracy"), ("eval/f1", "max", "f1"), ("mAP@50", "max", "ap"),
    ("BLEU", "max", "bleu"), ("test_loss", "min", "loss"),
    ("val_ppl", "min", "ppl"), ("valloss", "min", "loss"), ("testAccuracy", "max", "accuracy"),
    ("wer", "min", "wer"), ("mean_reward", "max", "reward"), ("val/bpb", "min", "bpb"),
])
def test_metric_names_read_as_written(name, direction, word):
    said = infer(name)
    assert (said.direction, said.word) == (direction, word)
    assert infer("val_metric") is None and infer("step") is None


def test_a_metric_name_that_says_no_direction_is_refused_and_a_contrary_one_warned(tmp_path):
    root = script_repo(tmp_path / "a", ACCURACY_SCRIPT.replace("{NAME}", "val_metric"))
    out = arx("init", str(root), "--target", "train.py", "--command",
              f"{sys.executable} train.py", "--metric", "val_metric")
    assert out.exit_code != 0 and "does not say whether lower or higher is better" in out.output
    assert "--direction max" in out.output and not (root / "arx.toml").exists()
    out = arx("init", str(root), "--target", "train.py", "--command",
              f"{sys.executable} train.py", "--metric", "val_metric", "--direction", "max")
    assert out.exit_code == 0, out.output
    root = script_repo(tmp_path / "b", ACCURACY_SCRIPT.replace("{NAME}", "accuracy"))
    out = CliRunner().invoke(cli, ["init", str(root), "--target", "train.py", "--command",
                                   f"{sys.executable} train.py", "--metric", "accuracy",
                                   "--direction", "min"])
    assert out.exit_code == 0
    assert "warning: --direction min for the metric 'accuracy', but 'accuracy' means higher" \
        in out.stderr
    check = arx("-C", str(root), "check")
    assert "warning     --direction min for the metric 'accuracy'" in check.output


def test_a_script_with_nothing_tunable_is_refused_naming_what_it_saw(tmp_path):
    script = ("import torch.nn as nn\nSEED = 0\ncell = nn.LSTMCell(1, 51)\n"
              "print('loss: 1.0')\n")
    root = script_repo(tmp_path, script)
    out = init(root)
    assert out.exit_code != 0
    assert "has nothing arx may change: it found SEED (arx sets it (seed constant))" in out.output
    assert "LSTMCell(1, 51) (line 3)" in out.output  # positional: not settings, but named
    assert not (root / "arx.toml").exists()


def test_a_refusal_says_why_each_local_file_did_not_join_and_the_command_adopting_one(
        tmp_path):
    """Local files with settings join the target (test_localfiles.py); a refusal is left for
    files that could not: a module with nothing to tune, an untracked one (explained once),
    a config file whose path the script only computes at run time."""
    script = ("import os\nimport yaml\nimport config\nimport settings\n"
              "cfg = yaml.safe_load(open(os.environ.get('CFG', 'conf/config.yaml')))\n"
              "print('loss:', config.LR * settings.WD * cfg['lr'])\n")
    root = script_repo(tmp_path, script)
    (root / "config.py").write_text("import os\nLR = float(os.environ.get('LR', '0.1'))\n")
    (root / "conf").mkdir()
    (root / "conf" / "config.yaml").write_text("lr: 0.1  # the optimizer's\n")
    (root / "conf" / "config.ini").write_text("[optim]\nlr = 0.1\n")
    g = git.Repo(root)
    g.git.add(A=True)
    g.index.commit("config")
    (root / "settings.py").write_text("WD = 0.01\n")  # never committed
    out = init(root)
    assert out.exit_code != 0 and "Traceback" not in out.output
    text = " ".join(out.output.split())
    assert ("the local module config (line 3), config.py, which holds no setting arx can tune "
            "either") in text
    assert "settings.py (imported as settings at line 4) holds settings but git does not track it" \
        in text
    assert text.count("settings.py") == 1, text
    assert ("the YAML file conf/config.yaml, whose settings `arx init --target "
            "conf/config.yaml` adopts") in text

    def init_target(path):
        return arx("init", str(root), "--target", path, "--command",
                   f"{sys.executable} train.py", "--metric", "loss")

    out = init_target("conf/config.ini")
    assert out.exit_code != 0 and "Traceback" not in out.output
    assert "conf/config.ini is not a Python script nor a YAML, TOML or JSON file (.ini)" \
        in out.output
    assert "parse" not in out.output  # never read as Python
    out = init_target("conf/config.yaml")  # the command the refusal named adopts the file
    assert out.exit_code == 0, out.output
    assert "tunable (1):\n  lr " in out.output


def test_check_proposes_a_metric_regex_from_the_line_it_saw(tmp_path):
    root = script_repo(tmp_path, "LR = 0.1\nprint('| end of epoch | test loss  6.30 |')\n")
    assert arx("init", str(root), "--target", "train.py", "--command",
               f"{sys.executable} train.py", "--metric", "test_loss").exit_code == 0
    out = arx("-C", str(root), "check")
    assert out.exit_code == 1
    hint = out.output.split("hint        ")[1]
    assert "the log prints 'test loss  6.30'" in hint
    regex = hint.split("metric_regex = '")[1].split("'")[0]
    assert regex == r"test\s+loss[\s:=|]*([-+0-9.eE]+)"
    doc = (root / "arx.toml").read_text().replace(
        'metric = "test_loss"', f"metric = \"test_loss\"\nmetric_regex = '{regex}'")
    (root / "arx.toml").write_text(doc)
    git.Repo(root).git.commit("-qam", "the regex arx check proposed")
    out = arx("-C", str(root), "check")
    assert out.exit_code == 0 and "test_loss = 6.3" in out.output


def test_check_reports_the_error_line_of_a_crash(tmp_path):
    root = script_repo(tmp_path, "LR = 0.1\nimport wandb_not_installed\n")
    assert init(root).exit_code == 0
    out = arx("-C", str(root), "check")
    assert out.exit_code == 1
    assert "error       ModuleNotFoundError: No module named 'wandb_not_installed'" in out.output
    assert "no module 'wandb_not_installed'" in out.output
    assert ".arx/logs/check/check.log" in out.output
    assert "arx-check" not in git.Repo(root).git.branch("-a")  # nothing left behind
    assert not (root / ".arx" / "check").exists()


def test_rm_removes_a_stopped_run_and_refuses_a_running_one(tmp_path):
    root = script_repo(tmp_path, ARGPARSE)
    assert init(root).exit_code == 0
    ws = open_run(root, {"iterations": 1}, name="old")
    ws.log_dir.mkdir(parents=True, exist_ok=True)
    (ws.log_dir / "0000-baseline.log").write_text("x")
    ws.close(remove_worktree=False)  # an interrupted run: branch, worktree, logs
    out = arx("-C", str(root), "rm", "old")
    assert out.exit_code == 0, out.output
    assert "branch arx/old" in out.output and "worktree" in out.output
    assert not ws.path.exists() and not ws.log_dir.exists()
    assert "arx/old" not in [b.name for b in git.Repo(root).branches]
    assert "no run named 'old'" in arx("-C", str(root), "rm", "old").output

    ws = open_run(root, {"iterations": 1}, name="busy")
    ws.close(remove_worktree=False)
    holder = subprocess.Popen(  # another arx holding the run
        [sys.executable, "-c", "import sys, time\nfrom arx.core.repo.lock import RunLock\n"
         f"RunLock({str(root)!r}, 'busy').acquire()\nprint('held', flush=True)\n"
         "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        out = arx("-C", str(root), "rm", "busy")
        assert out.exit_code != 0 and "is running" in out.output and "--force" in out.output
        started = time.monotonic()
        out = arx("-C", str(root), "rm", "--force", "busy")
        assert out.exit_code == 0, out.output
        assert holder.wait(timeout=10) != 0 and time.monotonic() - started < 10
        assert not RunLock(root, "busy").is_held()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_a_crash_line_shows_the_logs_error_and_its_path(tmp_path):
    out = io.StringIO()
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    (log_dir / "0003-trial.log").write_text("...")
    reporter = RichReporter(Console(file=out, width=200), log_dir=log_dir)
    progress = RunProgress(run="r", resumed=False, iterations=5, group="A", proposer="optuna",
                           baseline_metric=1.0, best_metric=1.0, best_iteration=0, counts={},
                           elapsed_s=1.0, trials_run=3, trial_seconds=1.0)
    tail = "Traceback (most recent call last):\n  File \"train.py\", line 3\n" \
           "ModuleNotFoundError: No module named 'wandb'"
    reporter.trial(progress, TraceRecord({"iteration": 3, "kind": "trial", "status": "crash",
                                          "changes": {"--wandb": True}, "reason": "exit code 1",
                                          "log_tail": tail}))
    text = out.getvalue()
    assert "exit code 1" in text
    assert f"ModuleNotFoundError: No module named 'wandb'  (log: {log_dir / '0003-trial.log'})" \
        in text


@pytest.mark.parametrize("state", [s.value for s in TrialState])
def test_every_trial_state_and_any_bracket_prints_as_it_is(tmp_path, state):
    """A state without a style (``no_effect`` printed "[]no_effect[/]", a MarkupError that ended
    the run at its first trial equal to the best) and values, reasons and lines with brackets
    (rich read "[levels]" as a style and dropped it) print verbatim."""
    out = io.StringIO()
    reporter = RichReporter(Console(file=out, width=250), log_dir=tmp_path)
    progress = RunProgress(run="r", resumed=False, iterations=5, group="D", proposer="optuna",
                           baseline_metric=1.0, best_metric=1.0, best_iteration=0, counts={},
                           elapsed_s=1.0, trials_run=3, trial_seconds=1.0)
    reporter.trial(progress, TraceRecord({
        "iteration": 3, "kind": "trial", "status": state, "changes": {"PATTERN": "[bold]S[/]"},
        "before": {"PATTERN": "SSSL"}, "reason": "[/] exit [red]1", "log_tail": "Error: [/x]"}))
    reporter.line("L2 mechanism Tabu refused: over [levels] max_mechanism_kb [/]")
    text = out.getvalue()
    change = "baseline" if state == "baseline" else "PATTERN 'SSSL'->'[bold]S[/]'"
    assert f"#  3 {state:<9} {change}" in text
    assert "L2 mechanism Tabu refused: over [levels] max_mechanism_kb [/]" in text


def test_table_cells_print_as_they_are():
    """`arx log`, `status` and `mechanism list` rows quote commit subjects and reasons."""
    out = io.StringIO()
    table = Table()
    table.add_column("change")
    add_row(table, "L1 #3 keep PATTERN 'SSSL'->'[SL]', [levels] k [/]")
    Console(file=out, width=200).print(table)
    assert "L1 #3 keep PATTERN 'SSSL'->'[SL]', [levels] k [/]" in out.getvalue()


def test_check_says_whether_the_target_prints_a_learning_curve(tmp_path, toy_repo):
    from pathlib import Path

    from support.repos import make_script_repo

    curve = Path(__file__).parents[1] / "support" / "curve_train.py"
    root = make_script_repo(tmp_path / "curve", curve)
    out = arx("-C", str(root), "check")
    assert out.exit_code == 0, out.output
    assert "curve       8 point(s) by step, 12 to 96; pruning on" in out.output
    out = arx("-C", str(toy_repo), "check")  # prints its metric once, after training
    assert out.exit_code == 0 and "curve       none: val_bpb is printed once" in out.output


def test_the_progress_line_never_cuts_a_value_or_a_word(tmp_path):
    """`params.l2_regularization 0.401->0.` and `a constraint: the co` read as something else."""
    out = io.StringIO()
    reporter = RichReporter(Console(file=out, width=250), log_dir=tmp_path)
    progress = RunProgress(run="r", resumed=False, iterations=5, group="A", proposer="optuna",
                           baseline_metric=1.0, best_metric=1.0, best_iteration=0, counts={},
                           elapsed_s=1.0, trials_run=3, trial_seconds=1.0)
    changes = {"params.l2_regularization": 0.38125, "params.learning_rate": 0.0125,
               "params.max_leaf_nodes": 63}
    before = {"params.l2_regularization": 0.401, "params.learning_rate": 0.1,
              "params.max_leaf_nodes": 31}
    reason = "the proposal breaks a constraint: the combination not tied or emsize == nhid"
    reporter.trial(progress, TraceRecord({"iteration": 2, "kind": "trial",
                                          "status": "invalid_proposal", "changes": changes,
                                          "before": before, "reason": reason}))
    text = out.getvalue()
    assert "params.l2_regularization 0.401->0.38125 (+2 more) " in text
    assert "the proposal breaks a constraint: the combination not tied… best" in text
