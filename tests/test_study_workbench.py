"""Studies in the workbench without a browser (issue 16): the Train tab's study form read and
refused in one line before anything is queued, the study job in the queue (trials done, best so
far, time left; cancel keeps finished trials; resume trains the rest), and the Runs tab's study
views on real trials (tiny CNNs, one epoch) of the small demo."""
from __future__ import annotations

import html
import time
from pathlib import Path

import gradio as gr
import pandas as pd
import pytest

from conftest import TINY_CNN, copy_session, tone, write_wav
from core.config import ConfigError
from core.store import Store
from pipelines.importing import import_dataset
from pipelines.study import Study
from test_train_runs_handlers import QueueOnly, form
from workbench import runs_handlers, study_form, study_handlers, train_progress
from workbench.context import Workbench
from workbench.job_queue import JobManager
from workbench.renderer import ClipViewCache
from workbench.study_form import GRID_COLUMNS, StudyForm

TINY_YAML = "fixed:\n" + "".join(f"  {item.split('=', 1)[0]}: {item.split('=', 1)[1]}\n" for item in TINY_CNN)


def study_fields(*, design: str = "grid", rows: list[list[str]] | None = None, yaml_text: str | None = None,
                 seeds: str = "42, 123", metric: str = "f1_macro", folds: float | None = 3, loso: bool = False) -> list:
    """The study fields as Gradio hands them to a handler (study_handlers.STUDY_FIELDS of them)."""
    table = pd.DataFrame(rows or [["", ""]], columns=GRID_COLUMNS)
    return [design, yaml_text is not None, table, yaml_text or "", seeds, metric, folds, loso]


def start(wb: Workbench, **fields) -> list:
    return study_handlers.start_study(wb, None, "ana", "demo-fast", "none", False, "", *study_fields(**fields),
                                      *form("demo-fast"))


def open_wb(session: Path, jobs: type[JobManager] = QueueOnly, **options) -> Workbench:
    store = Store.open(session)
    return Workbench(store=store, session_dir=Path(store.session_dir), views=ClipViewCache(store),
                     jobs=jobs(store, **options))


# --- the form, read and refused (no session) ----------------------------------------------------------
def test_a_grid_table_reads_keys_and_comma_separated_values_as_the_cli_grid():
    table = pd.DataFrame([["train.lr", "0.001, 0.002"], ["model.cnn_channels", "[8, 16, 16, 16], [16, 16, 16, 16]"],
                          ["", ""]], columns=GRID_COLUMNS)
    grid = study_form.grid_from_table(table)
    assert [c.overrides for c in grid.configs][1] == {"train.lr": 0.001, "model.cnn_channels": [16, 16, 16, 16]}
    assert len(grid.configs) == 4 and grid == study_form.grid_from_yaml(
        "grid:\n  train.lr: [0.001, 0.002]\n  model.cnn_channels: [[8, 16, 16, 16], [16, 16, 16, 16]]\n")
    assert study_form.grid_from_table(pd.DataFrame([["", ""]], columns=GRID_COLUMNS)).configs[0].name == "preset"
    assert study_handlers.preview(*study_fields(rows=[["train.lr", "0.001, 0.002"]], seeds="1,2,3")) == (
        '<span class="em-message-ok">2 configs x 3 seeds = 6 trials, ranked by val f1_macro</span>')


@pytest.mark.parametrize("fields, message", [
    (dict(rows=[["", "0.1, 0.2"]]), "grid table: the values '0.1, 0.2' have no dotted preset key beside them"),
    (dict(rows=[["train.lr", ""]]), "grid key 'train.lr': give its values, comma-separated"),
    (dict(rows=[["train.lr", "0.1, 0.1"]]), "grid table: grid key 'train.lr': a value is listed twice"),
    (dict(rows=[["train.lr", "0.1"], ["train.lr", "0.2"]]), "grid table: key 'train.lr' is on two rows"),
    (dict(rows=[["train.seed", "1, 2"]]), "grid config 'train.seed=1': sets train.seed; seeds are given with --seeds"),
    (dict(yaml_text="grid: [1"), "grid YAML: not valid YAML at line 1"),
    (dict(yaml_text="grid:\n  train.lr: [0.1]\nseeds: [1]\n"), "grid YAML: unknown section 'seeds'"),
    (dict(seeds="42, x"), "seeds: 'x' is not a whole number"),
    (dict(metric="loss"), "metric: 'loss' is not one of f1_macro, accuracy, balanced_accuracy"),
    (dict(design="crossval", folds=None), "folds: give a number of folds (K), or choose leave one group out"),
])
def test_a_bad_study_form_is_one_line_naming_what_is_wrong(fields, message):
    with pytest.raises(ConfigError) as refused:
        study_form.check(study_handlers.form_of(*study_fields(**fields)))
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)


# --- refusals that need the preset and the session: nothing queued, nothing written -------------------
@pytest.fixture(scope="module")
def one_group_session(tmp_path_factory) -> Path:
    """Eight tones of two labels, every clip of one source group ('rec')."""
    root = tmp_path_factory.mktemp("one-group")
    for label, freq in (("beep", 600), ("siren", 900)):
        for i in range(4):
            write_wav(root / "ds" / label / f"rec-{label}{i}.wav", tone(freq + 10 * i, seconds=0.3))
    with Store.open(root / "session") as store:
        import_dataset(store, root / "ds", group_pattern=r"^(rec)-", progress=False)
    return root / "session"


@pytest.mark.parametrize("fields, message", [
    (dict(rows=[["model.lora_rank", "4, 8"]]), "grid config 'model.lora_rank=4': unknown key 'model.lora_rank'; allowed: "),
    (dict(rows=[["train.lr", "0.001, -1"]]), "grid config 'train.lr=-1': train.lr: -1.0 is out of range (0, 10]"),
    (dict(rows=[["train.schedule", "cosine, steps"]]), "grid config 'train.schedule=steps': train.schedule: 'steps' is "
                                                       "not one of 'cosine', 'linear', 'constant'"),
    (dict(design="crossval", folds=2), "folds: 2 must be a whole number >= 3"),
    (dict(design="crossval", folds=4), "folds: 4 folds need at least 4 source groups; the pool has 1"),
    (dict(design="crossval", loso=True), "leave_one_group_out: needs at least 3 source groups"),
])
def test_a_study_the_preset_or_the_session_refuses_is_one_line_and_nothing_is_queued(small_demo_session,
                                                                                      one_group_session, tmp_path,
                                                                                      fields, message):
    source = one_group_session if fields.get("design") == "crossval" else small_demo_session
    wb = open_wb(copy_session(source, tmp_path / "session"))
    warnings = []
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(gr, "Warning", warnings.append)
            shown, line = start(wb, **fields)
        assert isinstance(shown, dict)  # gr.skip(): the followed job stays as it was
        assert html.escape(f"Study not started: {message}") in line and 'em-message-error' in line
        assert warnings and warnings[0].startswith(f"Study not started: {message}") and "\n" not in warnings[0]
        assert wb.jobs.jobs() == [] and wb.store.runs().empty
        assert not (Path(wb.store.session_dir) / "runs").exists()
    finally:
        wb.store.close()


def test_the_default_folds_follow_the_session_source_groups(one_group_session, tmp_path):
    assert [study_form.default_folds(n) for n in (1, 3, 4, 5, 40)] == [3, 3, 4, 5, 5]
    wb = open_wb(copy_session(one_group_session, tmp_path / "session"))
    try:
        field = study_handlers.folds_view(wb)
        assert field.value == 3 and "1 source group(s)" in field.info
    finally:
        wb.store.close()


# --- the study job: queued, cancelled, resumed; its views in the Runs tab --------------------------------
def test_a_queued_study_is_one_job_that_cancels_keeps_its_plan_and_resumes(small_demo_session, tmp_path):
    wb = open_wb(copy_session(small_demo_session, tmp_path / "session"))
    try:
        shown, line = start(wb, rows=[["train.lr", "0.001, 0.002"]], seeds="1, 2")
        job = wb.jobs.jobs()[0]
        assert shown is None and job.kind == "study" and job.trials_total == 4 and job.trials_done == 0
        assert html.escape(f"study {job.run_id} queued: 4 trials, every trial from the preset's own start") in line
        assert "0 / 4 trials done" in train_progress.progress_html(job)
        assert train_progress.jobs_frame(wb).iloc[0].tolist()[:3] == [job.run_id, "study", "queued #1"]
        study = Study.load(job.run_dir)
        assert [(t.name, t.seed, t.status) for t in study.trials][:2] == [("train.lr=0.001", 1, "pending"),
                                                                         ("train.lr=0.001", 2, "pending")]
        assert wb.store.run(job.run_id)["status"] == "queued"

        wb.jobs.cancel(job.run_id)
        run = wb.store.run(job.run_id)
        assert run["status"] == "cancelled" and wb.jobs.snapshot(job.run_id).status == "cancelled"
        button = runs_handlers.resume_button(wb, run)
        assert button.visible and "train its 4 unfinished trial(s)" in button.value
        views = runs_handlers.study_view(wb, job.run_id)
        assert views[0].visible and "0 of 4 trials succeeded so far" in views[1]
        assert views[8].visible is False and views[9].visible is False  # no audit or gates of the study itself
        assert views[7].interactive is False  # nothing trained: nothing to promote

        note, hidden = runs_handlers.queue_resume(wb, None, "ana", job.run_id)
        assert f"resume of study {job.run_id} queued #1: 0 of 4 trials are done and stay" in note
        assert hidden.visible is False and wb.jobs.snapshot(job.run_id).status == "queued"
        assert not runs_handlers.resume_button(wb, wb.store.run(job.run_id)).visible  # queued once
    finally:
        wb.store.close()


@pytest.mark.slow
def test_a_running_study_reports_trials_and_best_then_cancels_and_resumes_to_the_end(small_demo_session, tmp_path):
    """1 config x 2 seeds, really trained: cancelled after its first trial, resumed for the second."""
    wb = open_wb(copy_session(small_demo_session, tmp_path / "session"), jobs=JobManager, after_training=None,
                 poll_s=0.1)
    try:
        _, line = start(wb, yaml_text="configs:\n  - {name: tiny, set: {}}\n" + TINY_YAML, seeds="7, 8")
        study_id = wb.jobs.jobs()[0].run_id
        seen = []
        while (job := wb.jobs.snapshot(study_id)).trials_done < 1:
            seen.append((job.phase, job.trial, job.total_steps))
            assert not job.finished, job.log
            time.sleep(0.1)
        wb.jobs.cancel(study_id)
        stopped = wb.jobs.wait(study_id, timeout_s=120)
        assert any(phase == "trials" and trial and trial.startswith("tiny seed 7, run ") and steps
                   for phase, trial, steps in seen), seen[-5:]
        assert stopped.best["name"] == "tiny" and stopped.best["seeds"] == 1 and stopped.eta_s is None
        status = train_progress.progress_html(stopped)
        assert stopped.status == "cancelled" and "1 / 2 trials done" in status and "best so far: tiny, val f1_macro" in status
        assert "resume the study from the Runs tab" in stopped.error
        assert [t.status for t in Study.load(stopped.run_dir).trials][0] == "succeeded"
        finished = Study.load(stopped.run_dir).trials[0].run_id

        runs_handlers.queue_resume(wb, None, "ana", study_id)
        done = wb.jobs.wait(study_id, timeout_s=180)
        study = Study.load(done.run_dir)
        assert done.status == "succeeded" and done.trials_done == 2 and [t.status for t in study.trials] == ["succeeded"] * 2
        assert study.trials[0].run_id == finished  # the finished trial stayed; only the rest trained
        runs = wb.store.runs(kind="train").set_index("id")
        assert wb.store.run(study_id)["status"] == "succeeded"
        assert set(runs.index[runs.status == "succeeded"]) == {t.run_id for t in study.trials}
        assert set(runs.status) <= {"succeeded", "cancelled"}  # a trial stopped before its first epoch trains anew
        assert f"(select study {study_id})" in train_progress.progress_html(done)

        views = runs_handlers.study_view(wb, study_id)
        results, trials, target = views[3], views[5], views[6]
        assert results.columns[:4].tolist() == ["rank", "config", "seeds ok", "val F1-macro"]
        assert results.iloc[0, :3].tolist() == ["1", "tiny", "2/2"] and " ± " in results.iloc[0, 3] and "[" in results.iloc[0, 3]
        assert trials["status"].tolist() == ["succeeded", "succeeded"] and views[4] is not None  # the plot
        best = max(study.trials, key=lambda t: t.metrics["val_f1_macro"])
        assert target.value == best.run_id and "the best config's best seed" in target.choices[0][0]
        by_test = runs_handlers.resort_study(wb, study_id, "test_accuracy")
        assert by_test.columns[3] == "test accuracy"
        files = runs_handlers.prepare_downloads(wb, study_id).value
        assert sorted(Path(f["path"]).name for f in files) == sorted(f"{study_id}-{n}" for n in
                                                             ("results.json", "results.csv", "trials.csv", "results.md",
                                                              "spread.png"))
    finally:
        wb.jobs.shutdown()
        wb.store.close()
