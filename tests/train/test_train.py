"""train.py end to end, as a real subprocess on tiny data: summary, determinism, budget, failure."""

import ast
import json
import re
import time

import pytest

SUMMARY_KEYS = ["val_bpb", "training_seconds", "total_seconds", "peak_mem_mb", "total_tokens_M",
                "num_steps", "num_params_M", "depth", "data_fingerprint"]
CONSTANTS = ["DEPTH", "ASPECT_RATIO", "HEAD_DIM", "WINDOW_PATTERN", "TOTAL_BATCH_SIZE",
             "DEVICE_BATCH_SIZE", "MAX_SEQ_LEN", "EMBEDDING_LR", "UNEMBEDDING_LR", "MATRIX_LR",
             "SCALAR_LR", "WEIGHT_DECAY", "ADAM_BETAS", "WARMUP_RATIO", "WARMDOWN_RATIO",
             "FINAL_LR_FRAC", "SEED", "TIME_BUDGET", "TRAIN_STEPS", "CURVE_EVALS"]


def constant_block(source):
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# --- constants"))
    end = next(i for i, line in enumerate(lines) if line.startswith("# --- end of constants"))
    return lines[start + 1:end]


def test_constants_block_is_one_literal_assignment_per_line(train_dir):
    source = (train_dir / "train.py").read_text()
    block = constant_block(source)
    names = []
    for line in block:
        m = re.fullmatch(r"([A-Z][A-Z0-9_]*) = (.+?)  # (\S.*)", line)
        assert m, f"not `NAME = literal  # why`: {line!r}"
        expr = ast.parse(m.group(2), mode="eval").body
        allowed = (ast.Constant, ast.Tuple, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop,
                   ast.Load)
        assert all(isinstance(n, allowed) for n in ast.walk(expr)), line
        names.append(m.group(1))
    assert names == CONSTANTS


def test_arx_discovers_exactly_the_constants_block(train_dir):
    """The block, and the two literal keywords of the module-level AdamW call (locked in
    space.toml); the model's own calls (``nn.Linear(..., bias=False)``) and the functions only
    its classes call are internals, never settings."""
    codemods = pytest.importorskip("arx.core.codemods.constants")
    found = [c.name for c in codemods.discover_constants((train_dir / "train.py").read_text())]
    assert found == [*CONSTANTS, "AdamW.eps", "AdamW.weight_decay"]


def test_tiny_run_prints_progress_and_a_parsable_summary(run_train, summary_of, data_dir):
    proc = run_train(TRAIN_STEPS="6")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = summary_of(proc.stdout)
    assert list(summary) == SUMMARY_KEYS
    assert 0 < float(summary["val_bpb"]) < 20
    assert summary["num_steps"] == "6" and summary["depth"] == "2"
    assert float(summary["total_tokens_M"]) == pytest.approx(6 * 2**10 / 1e6, abs=1e-3)
    assert float(summary["training_seconds"]) <= float(summary["total_seconds"])
    meta = json.loads((data_dir / "meta.json").read_text())
    assert summary["data_fingerprint"] == meta["fingerprint"][:12]
    progress = [line for line in proc.stdout.splitlines() if line.startswith("step ")]
    assert progress[0].startswith("step 00001") and progress[-1].startswith("step 00006")
    # steps mode: the last step runs at progress 5/6, a third of the way down the warmdown
    assert "lrm 0.33" in progress[-1]
    # the learning curve: a cheap val_bpb after steps 1-5 (the 6th ends the run), each named
    training = proc.stdout.split("\n---\n")[0].splitlines()
    curve = [k for k, line in enumerate(training) if line.startswith("val_bpb: ")]
    assert len(curve) == 5
    assert [training[k - 1][:30] for k in curve] == [
        f"step {s:05d} | curve eval {s}/8" for s in range(1, 6)]


@pytest.mark.slow
def test_steps_mode_is_bit_identical_for_a_seed_and_differs_across_seeds(run_train, summary_of):
    runs = [run_train(TRAIN_STEPS="4", SEED=seed) for seed in (7, 7, 8)]
    for proc in runs:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    a, b, c = (summary_of(p.stdout)["val_bpb"] for p in runs)
    assert a == b
    assert a != c


@pytest.mark.serial  # timed against live processes: not beside another test's load
@pytest.mark.slow
def test_time_budget_is_honoured_and_excludes_evaluation(run_train, summary_of):
    t0 = time.time()
    proc = run_train(TRAIN_STEPS="0", TIME_BUDGET="3")
    wall = time.time() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = summary_of(proc.stdout)
    training = float(summary["training_seconds"])
    assert 3.0 <= training < 5.0  # stops at the first step past the budget
    assert int(summary["num_steps"]) > 3
    # start-up, the 2 uncounted warm-up steps and the evaluation are outside training_seconds
    assert float(summary["total_seconds"]) > training
    assert wall < 3 + 30


def test_forced_nan_prints_fail_and_exits_1(run_train):
    proc = run_train(env={"ARX_TRAIN_FORCE_NAN": "1"})
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert "FAIL" in lines
    assert "---" not in lines and "val_bpb" not in proc.stdout


def test_exploding_loss_fails_too(run_train):
    # an absurd embedding LR blows the loss past 100 (or to NaN) within a few steps
    proc = run_train(EMBEDDING_LR="1e30", MATRIX_LR="1e30", TRAIN_STEPS="6")
    assert proc.returncode == 1 and "FAIL" in proc.stdout.splitlines(), proc.stdout


def test_missing_data_says_to_run_prepare(run_train, tmp_path):
    proc = run_train(env={"ARX_DATA_DIR": str(tmp_path / "nothing-here")})
    assert proc.returncode == 1
    assert "python prepare.py" in proc.stderr
