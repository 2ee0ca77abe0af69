"""`arx export` and `arx run --storage`: a run as an Optuna study, read back through Optuna's own
API (``optuna.load_study``) and optuna-dashboard's WSGI app (its JSON API). Real runs of the
toy target through the real command line and engine; real SQLite and journal storages."""

from __future__ import annotations

import json
from wsgiref.util import setup_testing_defaults

import git
import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState as OptunaState

from arx.cli.main import cli
from arx.core.app.export import distribution, live_export, optuna_state, public_url
from arx.core.app.runs import history
from arx.core.loop.driver import run_to_end
from arx.core.loop.params import ParamSpec
from arx.core.loop.trace import read_trace
from arx.core.proposers.offline import OptunaProposer
from arx.core.repo.git import GitRepo
from arx.core.repo.workspace import open_run
from arx.core.states import MEASURED

from support.repos import edit_toml, make_toy_repo

optuna_dashboard = pytest.importorskip("optuna_dashboard")  # the [dashboard] extra


def arx(root, *args):
    result = CliRunner().invoke(cli, ["-C", str(root), *args])
    assert result.exit_code == 0, result.output
    return result.output


def exported(root, name):
    """The arx trials an export writes: the baseline and every Level-1 trial record."""
    return [r for r in read_trace(GitRepo(root), name) if r["kind"] in ("baseline", "trial")]


def dashboard_get(storage, path):
    """GET ``path`` from optuna-dashboard's WSGI app, as its web page does."""
    app = optuna_dashboard.wsgi(storage)
    environ: dict = {}
    setup_testing_defaults(environ)
    environ.update(PATH_INFO=path, REQUEST_METHOD="GET")
    status = []
    body = b"".join(app(environ, lambda s, headers, exc=None: status.append(s)))
    assert status[0].startswith("200"), (status, body[:300])
    return json.loads(body)


@pytest.fixture(scope="module")
def group_c(tmp_path_factory):
    """A group C run of the toy target (Level 1.5 every 2 iterations, a catalog mechanism
    from the first cycle) that may choose MODE 'crash': seed 1 crashes one trial. Written to
    a journal file as it ran (``--storage``)."""
    tmp = tmp_path_factory.mktemp("export")
    root = make_toy_repo(tmp / "project", params={
        "ACTIVATION": {"choices": ["relu", "gelu"]}, "MODE": {"choices": ["ok", "crash"]}})
    edit_toml(root, locked=["SEED", "TIME_BUDGET", "TRAIN_STEPS"])
    doc = (root / "arx.toml").read_text()
    (root / "arx.toml").write_text(doc.replace("[run]\n", "[levels]\nk = 2\nm = 1\n"
                                               "step_aside = false\n\n[run]\n"))
    git.Repo(root).git.commit("-am", "test: Level 2 early")
    live = str(tmp / "live-journal.log")
    arx(root, "run", "--name", "c", "--group", "C", "--iterations", "6", "--seed", "1",
        "--quiet", "--storage", live)
    return root, tmp, live


def test_export_of_a_group_c_run_loads_in_optuna_with_one_trial_per_arx_trial(group_c):
    root, tmp, live = group_c
    storage = f"sqlite:///{tmp / 'arx.db'}"
    out = arx(root, "export", "c", "--storage", storage)
    records = exported(root, "c")
    assert f"{len(records)} trials written, {len(records)} in all" in out
    study = optuna.load_study(study_name="c", storage=storage)
    assert study.direction is optuna.study.StudyDirection.MINIMIZE
    assert study.user_attrs["arx_run"] == "c" and study.user_attrs["metric"] == "val_bpb"
    trials = study.get_trials()
    assert len(trials) == len(records) == 7  # the baseline and 6 iterations
    statuses = [r["status"] for r in records]
    assert "crash" in statuses and "keep" in statuses  # both states are exercised
    shas = {(c.trailers["Arx-Level"], int(c.trailers.get("Arx-Iteration", 0))): c.sha
            for c in history(GitRepo(root), "c")}
    for trial, rec in zip(trials, records):
        assert trial.user_attrs["iteration"] == rec["iteration"]
        assert trial.user_attrs["status"] == rec["status"]
        if rec["status"] in MEASURED:
            assert trial.state is OptunaState.COMPLETE and trial.value == rec["metric"]
        else:
            assert trial.state is OptunaState.FAIL and trial.value is None
        assert trial.params["LR"] == rec["config"]["LR"]
        assert trial.params["MODE"] == rec["config"]["MODE"]
        if rec["status"] == "keep":
            assert trial.user_attrs["commit"] == shas[("1", rec["iteration"])]
        assert trial.user_attrs["hypothesis"] == rec["hypothesis"]
    assert trials[0].user_attrs["commit"] == shas[("baseline", 0)]
    # the catalog mechanism Level 2 activated is named on the trials that ran under it
    first = next(c for c in history(GitRepo(root), "c") if c.trailers["Arx-Level"] == "2")
    after = int(first.trailers["Arx-Iteration"])
    assert all(t.user_attrs["mechanisms"] for t in trials if t.user_attrs["iteration"] > after)
    assert not any(t.user_attrs["mechanisms"] for t in trials
                   if t.user_attrs["iteration"] <= after)
    # what `arx run --storage` wrote as it ran (into a journal file) is the same study
    written = optuna.load_study(study_name="c", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(live))).get_trials()
    assert [(t.state, t.value, t.params, t.user_attrs) for t in written] == \
        [(t.state, t.value, t.params, t.user_attrs) for t in trials]
    # a second export writes nothing; optuna-dashboard's API lists the study and its trials
    assert "0 trials written, 7 in all" in arx(root, "export", "c", "--storage", storage)
    summaries = dashboard_get(storage, "/api/studies")["study_summaries"]
    assert [s["study_name"] for s in summaries] == ["c"]
    detail = dashboard_get(storage, f"/api/studies/{summaries[0]['study_id']}")
    assert len(detail["trials"]) == 7
    assert {t["state"] for t in detail["trials"]} == {"Complete", "Fail"}
    bad = CliRunner().invoke(cli, ["-C", str(root), "export", "c", "--storage", "nodb://x"])
    assert bad.exit_code != 0 and "cannot open the Optuna storage nodb://x" in bad.output
    assert "sqlite:///arx.db" in bad.output and "Traceback" not in bad.output


def test_run_storage_writes_after_each_trial_and_a_resume_duplicates_nothing(tmp_path):
    root = make_toy_repo(tmp_path / "project")
    journal = tmp_path / "journal.log"  # the other kind of storage: a journal file

    class Counting:
        """The inner reporter: how many trials the study held when each trial was shown."""

        seen: list[int] = []

        def trial(self, progress, record):
            self.seen.append(len(optuna.load_study(
                study_name="r", storage=optuna.storages.JournalStorage(
                    optuna.storages.journal.JournalFileBackend(str(journal)))).trials))

        def __getattr__(self, name):
            return lambda *args, **kw: None

    ws = open_run(root, {"iterations": 3}, name="r")
    run_to_end(ws, OptunaProposer(seed=0), live_export(ws, str(journal), Counting()))
    assert Counting.seen == [0, 1, 2, 3]  # each trial is in the study before the next one
    arx(root, "run", "--resume", "r", "--iterations", "5", "--quiet", "--storage", str(journal))
    trials = optuna.load_study(study_name="r", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal)))).trials
    assert [t.user_attrs["iteration"] for t in trials] == [0, 1, 2, 3, 4, 5]
    assert len({t.user_attrs["arx_record"] for t in trials}) == len(exported(root, "r")) == 6

    # a study of that name holding another run is refused before anything runs
    arx(root, "rm", "r")
    again = CliRunner().invoke(cli, ["-C", str(root), "run", "--name", "r", "--iterations", "1",
                                     "--storage", str(journal)])
    assert again.exit_code != 0 and "holds another run" in again.output, again.output
    assert "optuna delete-study --study-name r" in again.output
    assert "Traceback" not in again.output
    assert "removed run r" in again.output and not GitRepo(root).branch_exists("arx/r")
    assert len(optuna.load_study(study_name="r", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal)))).trials) == 6  # untouched


def test_states_params_and_urls():
    assert optuna_state("keep", 1.5) is OptunaState.COMPLETE
    assert optuna_state("no_effect", 1.5) is OptunaState.COMPLETE
    assert optuna_state("discard", None) is OptunaState.FAIL  # measured, but no finite metric
    for status in ("crash", "timeout", "nan", "invalid_proposal", "interrupted", "contended"):
        assert optuna_state(status, None) is OptunaState.FAIL
    assert optuna_state("pruned", None) is OptunaState.PRUNED
    lr = ParamSpec("LR", "float", 0.02, low=0.002, high=0.2, log=True)
    value, dist = distribution(lr, 0.5)  # outside the declared range: the range widens
    assert value == 0.5 and dist.high == 0.5 and dist.low == 0.002 and dist.log
    assert distribution(lr, 0.0) is None  # a log range cannot hold 0
    act = ParamSpec("ACT", "str", "relu", choices=("relu", "gelu"))
    assert distribution(act, "gelu")[0] == "gelu" and distribution(act, "tanh") is None
    assert distribution(ParamSpec("B", "bool", True), False)[1].choices == (False, True)
    assert public_url("postgresql://me:secret@db/arx") == "postgresql://me:***@db/arx"
    assert public_url("sqlite:///arx.db") == "sqlite:///arx.db"
