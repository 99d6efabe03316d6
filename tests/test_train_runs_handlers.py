"""The Train and Runs tabs' handlers without a browser, on a real session (DuckDB store, WAV files,
checkpoints of real untrained models): the form, the queue while jobs wait, the run list and
production marks, one run's views and gates, Resume, audits, comparisons, downloads and rollback.

Nothing is trained: runs' results are ingested as the writer ingests a finished child's, and the
job queue never starts a job (QueueOnly), so what a person sees while jobs wait can be read."""
from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import gradio as gr
import pandas as pd
import pytest

from conftest import LENIENT_GATES, copy_session, tone, write_wav
from core.checkpoint import checkpoint_dir, save_checkpoint
from core.config import ConfigError, load_preset
from core.models import build_model
from core.plots import plot_confusion
from core.store import Store, StoreError
from core.train import PLOTS_DIR, PROGRESS_FILE, STATE_DIR
from pipelines.finetune import prepare_finetune
from pipelines.promotion import promote
from test_train_form import form_of
from workbench import gate_panel, runs_handlers, runs_views, train_handlers, train_progress
from workbench.context import Workbench
from workbench.job_queue import JobManager
from workbench.renderer import ClipViewCache

CLASSES = ["alert_sounds", "emergency_sirens", "road_traffic"]
SPLITS = {"train": 2, "val": 1, "test": 2}  # clips per class
SMALL = ["features.max_length_s=0.5", "features.f_max_hz=8000", "model.cnn_channels=[8, 16, 16, 16]"]
PRODUCTION, CANDIDATE = "20260101-000000-train-prod", "20260102-000000-train-cand"
PANEL = 11  # the gate panel's outputs (GatePanel.outputs)


class QueueOnly(JobManager):
    """Queues jobs and never starts one: no worker thread, so no training child."""

    def _ensure_worker(self) -> None:
        pass


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    """15 tones (3 classes; train, val, test); PRODUCTION (lenient gates, every test clip right)
    and CANDIDATE (plan A's gates, one test siren heard as an alert), each with a checkpoint and an
    audit of test, production promoted; and two cancelled runs, one with a resume point (RESUMABLE,
    'stopped after epoch 1') and one without. Tests copy it (wb)."""
    root = tmp_path_factory.mktemp("train-runs-handlers")
    rows = [(label, split, i) for label in CLASSES for split, n in SPLITS.items() for i in range(n)]
    audio = root / "audio"
    paths = [write_wav(audio / label / f"{label}-{split}-{i}.wav", tone(300.0 + 40 * n, seconds=0.4)).relative_to(audio)
             for n, (label, split, i) in enumerate(rows)]
    with Store.open(root / "session") as store:
        dataset = store.add_dataset(name="tones", root=audio, layout="folder")
        store.add_clips(dataset, pd.DataFrame({"path": [p.as_posix() for p in paths], "status": "ok",
                                               "split": [split for _, split, _ in rows], "duration_s": 0.4,
                                               "sample_rate_hz": 16000, "original_label": [l for l, _, _ in rows]}))
        clips = store.clips()
        trained_run(store, PRODUCTION, [*SMALL, *LENIENT_GATES], clips, wrong=0)
        promote(store, run_id=PRODUCTION, actor="ana")
        trained_run(store, CANDIDATE, SMALL, clips, wrong=1)
        for run_id, progress in (("resumable", {"epochs_done": 1, "epochs": 4, "step": 3, "best_epoch": 1}), ("fresh", None)):
            prepared = prepare_finetune(store, preset="demo-fast", overrides=["train.epochs=4"], init_from="none")
            if progress:
                (prepared.run_dir / STATE_DIR).mkdir()
                (prepared.run_dir / STATE_DIR / PROGRESS_FILE).write_text(json.dumps(progress))
            store.set_run_status(prepared.run_id, "cancelled", summary={
                "evaluated": False, "message": "cancelled after 1 epoch(s); the best checkpoint (epoch 1) is kept "
                                               "unevaluated: audit the run to evaluate it"} if progress else None)
            (root / f"{run_id}.id").write_text(prepared.run_id)
    return root / "session"


def trained_run(store: Store, run_id: str, overrides: list[str], clips: pd.DataFrame, *, wrong: int) -> None:
    """A succeeded demo-fast run with a checkpoint (an untrained model of the preset's shape), its
    predictions, test metrics and a confusion plot, and a succeeded audit of test whose first
    `wrong` test sirens are heard as alerts."""
    config = load_preset("demo-fast", overrides)
    run_dir = Path(store.session_dir) / "runs" / run_id
    model = build_model(config.model, feature_cfg=config.features, labels=CLASSES)
    save_checkpoint(checkpoint_dir(run_dir), model=model, model_cfg=config.model, feature_cfg=config.features,
                    labels=CLASSES, norm_stats={})
    store.create_run(run_id, kind="train", preset="demo-fast", config=config.to_dict(), parent_run_id=None,
                     manifest_decision_id=store.last_decision_id(), run_dir=run_dir)
    predicted = clips.original_label.tolist()
    sirens = clips.index[(clips.split == "test") & (clips.original_label == "emergency_sirens")]
    for row in sirens[:wrong]:
        predicted[row] = "alert_sounds"
    predictions = pd.DataFrame({"clip_id": clips.id, "split": clips.split, "label": clips.original_label,
                                "predicted": predicted, "confidence": 0.8,
                                "probs": [[0.8 if c == p else 0.1 for c in CLASSES] for p in predicted]})
    accuracy = float((predictions.label == predictions.predicted)[predictions.split == "test"].mean())
    metrics = pd.DataFrame([("test", "accuracy", None, accuracy), ("test", "f1_macro", None, accuracy - 0.05),
                            *(("test", "recall", label, 1.0) for label in CLASSES)],
                           columns=["split", "name", "class_label", "value"])
    store.ingest_run_results(run_id, predictions=predictions, metrics=metrics)
    store.set_run_status(run_id, "succeeded")
    plot_confusion(run_dir / PLOTS_DIR / "confusion_test.png", matrix=[[2, 0, 0], [0, 2, 0], [0, 0, 2]], labels=CLASSES,
                   normalized=False, title="test")
    audit_id = f"{run_id}-audit"
    store.create_run(audit_id, kind="audit", preset=None, config={"splits": ["test"]}, parent_run_id=run_id,
                     manifest_decision_id=store.last_decision_id(), run_dir=Path(store.session_dir) / "runs" / audit_id)
    store.ingest_run_results(audit_id, predictions=predictions[predictions.split == "test"], metrics=metrics)
    store.set_run_status(audit_id, "succeeded")


@pytest.fixture
def wb(session, tmp_path) -> Workbench:
    store = Store.open(copy_session(session, tmp_path / "session"))
    yield Workbench(store=store, session_dir=Path(store.session_dir), views=ClipViewCache(store), jobs=QueueOnly(store))
    store.close()


def cancelled(session: Path, which: str) -> str:
    """The id of the cancelled run 'resumable' or 'fresh'."""
    return (session.parent / f"{which}.id").read_text()


def form(preset: str, **changes) -> list:
    """The Train form's values as Gradio hands them to a handler, with some scalar fields changed."""
    scalars, *tables = form_of(load_preset(preset))
    scalars.update({key.replace("__", "."): value for key, value in changes.items()})
    return [*scalars.values(), *tables]


def queue(wb: Workbench, preset: str = "demo-fast", start_from: str = "production", **changes) -> list:
    return train_handlers.start_job(wb, None, "ana", preset, start_from, False, "", *form(preset, **changes))


# --- Train: the form ------------------------------------------------------------------------------
def test_choosing_a_preset_fills_the_form_and_a_curriculum_locks_the_epochs():
    description, model, epochs, *rest = train_handlers.choose_preset(CLASSES, "demo-fast")
    assert description.startswith("**demo-fast**: A compact CNN") and model == "cnn"
    assert epochs.value == 30 and epochs.interactive is True
    assert rest[-2:] == [False, '<span class="em-message-ok">preset demo-fast loaded</span>']  # YAML mode off
    sirens = train_handlers.choose_preset(CLASSES, "sirens-focused")[2]
    assert sirens.interactive is False and sirens.info.startswith("Set by the curriculum below: 4 stage(s)")


def test_the_preview_names_the_changed_setting_or_the_wrong_field():
    yaml_text, message, epochs = train_handlers.preview("demo-fast", False, "", *form("demo-fast", train__epochs=2))
    assert message == '<span class="em-message-ok">changed from the preset: train.epochs=2</span>'
    assert "epochs: 2" in yaml_text and epochs.interactive is True
    yaml_text, message, epochs = train_handlers.preview("demo-fast", False, "", *form("demo-fast", train__epochs=0))
    assert yaml_text == gr.skip() and epochs == gr.skip()
    assert message == '<span class="em-message-error">train.epochs: 0 is out of range [1, 10000]</span>'


def test_a_preset_whose_noise_bank_the_session_lacks_is_shown_and_refused_in_one_line(wb):
    """speech-cnn names noise_bank/ of the session: any session's tab lists and shows it; this one has
    no bank there, so the preview says so beside the button and Fine-tune queues nothing."""
    description = train_handlers.choose_preset(CLASSES, "speech-cnn")[0]
    assert description.startswith("**speech-cnn**: SPEECH / NONSPEECH")
    missing = (f"noise_bank: {Path(wb.store.session_dir).resolve() / 'noise_bank'} is not a folder; put a noise bank "
               "in MUSAN layout there (music/, speech/, noise/), or --set noise_bank=/path/to/musan, or remove "
               "background_noise from augment")
    unbound = train_handlers.preview("speech-cnn", False, "", *form("speech-cnn"))[1]
    assert unbound == '<span class="em-message-ok">the preset as it is</span>'
    shown = train_handlers.preview("speech-cnn", False, "", *form("speech-cnn"), session_dir=wb.store.session_dir)
    assert shown[1] == f'<span class="em-message-error">{missing}</span>'
    with pytest.warns(UserWarning, match=re.escape(f"Not started: {missing}")):
        shown, message = queue(wb, "speech-cnn", start_from="none")
    assert shown == gr.skip() and message == f'<span class="em-message-error">Not started: {missing}</span>'
    assert wb.jobs.jobs() == [] and len(wb.store.runs(kind="train")) == 4


def test_typing_checks_only_that_the_bank_is_there_and_queueing_reads_it(wb, monkeypatch):
    """The form checks itself on every keystroke: it must not read a bank's files (a MUSAN bank has
    thousands); Fine-tune reads them, so a bank without audio is refused there, before any run."""
    bank = Path(wb.store.session_dir) / "noise_bank"
    (bank / "noise").mkdir(parents=True)
    (bank / "noise" / "empty.wav").write_bytes(b"")  # an audio file's name, no audio in it
    from core.augment import noise_bank

    def no_header_reads(*args, **kwargs):
        raise AssertionError("the typing preview read a bank file's header")

    with monkeypatch.context() as patch:
        patch.setattr(noise_bank.sf, "info", no_header_reads)
        shown = train_handlers.preview("speech-cnn", False, "", *form("speech-cnn"), session_dir=wb.store.session_dir)
    assert shown[1] == '<span class="em-message-ok">the preset as it is</span>'
    with pytest.warns(UserWarning, match="Not started: noise_bank: .* holds no readable audio"):
        _, message = queue(wb, "speech-cnn", start_from="none")
    assert "holds no readable audio" in message and len(wb.store.runs(kind="train")) == 4


# --- Train: the queue -------------------------------------------------------------------------------
def test_fine_tune_queues_the_job_and_says_what_it_inherits_and_what_waits_ahead(wb):
    shown, message = queue(wb, train__epochs=2)
    first = re.search(r"run (\S+) queued\. ", message).group(1)
    assert shown is None and wb.store.run(first)["status"] == "queued"
    assert (f"The manifest was frozen at decision {wb.store.last_decision_id()}. It starts from production run "
            f"{PRODUCTION} and keeps its architecture and features: model.cnn_channels [32, 64, 128, 128] -&gt; "
            "[8, 16, 16, 16]") in message
    message = queue(wb, start_from="none")[1]
    second = re.search(r"run (\S+) queued; 1 job\(s\) ahead of it\.", message).group(1)
    assert message.endswith("It starts from scratch (the preset&#x27;s own start).</span>")
    table = train_progress.jobs_frame(wb)  # newest first
    assert table.run.tolist() == [second, first] and table.state.tolist() == ["queued #2", "queued #1"]
    assert table.set_index("run").loc[first, "changed settings"] == "train.epochs=2"


def test_a_refused_fine_tune_says_why_beside_the_button_and_queues_nothing(wb):
    with pytest.raises(ValueError, match="Enter your name"):
        train_handlers.start_job(wb, None, "", "demo-fast", "production", False, "", *form("demo-fast"))
    with pytest.warns(UserWarning, match="Not started: train.epochs: 0 is out of range"):
        shown, message = queue(wb, train__epochs=0)
    assert shown == gr.skip() and message.startswith('<span class="em-message-error">Not started: train.epochs: 0')
    with pytest.warns(UserWarning, match="init_from: preset 'ast-lms' builds model.name 'ast', but production run"):
        queue(wb, "ast-lms")
    assert wb.jobs.jobs() == [] and len(wb.store.runs(kind="train")) == 4


def test_the_timer_shows_the_waiting_job_and_skips_when_nothing_moved(wb):
    assert train_handlers.refresh(wb, None, -1, None, panel_size=PANEL)[0].startswith('<div class="em-job" data-status="none"')
    run_id = re.search(r"run (\S+) queued", queue(wb)[1]).group(1)
    views = train_handlers.refresh(wb, None, -1, None, panel_size=PANEL)
    progress, loss, _, log, jobs, cancel, version, *panel, choices = views
    assert f"<b>run {run_id}</b> &middot; demo-fast &middot; started by ana" in progress
    assert 'data-status="queued"' in progress and "waiting for the job before it" in progress
    assert set(loss.series) == {"train loss (per step)", "validation loss"} and loss.value.isna().all()
    assert log.startswith("queued by ana: preset demo-fast") and jobs.state.tolist() == ["queued #1"]
    assert cancel.interactive is True and version == wb.jobs.version
    assert panel == [gr.skip()] * (1 + PANEL) and choices == gr.skip()  # nothing finished to report on
    assert train_handlers.refresh(wb, None, version, None, panel_size=PANEL) == gr.skip()


def test_cancel_stops_the_shown_job_and_a_finished_job_redraws_the_gate_panel(wb):
    with pytest.raises(ValueError, match="No job to cancel"):
        train_handlers.cancel_job(wb, None)
    run_id = re.search(r"run (\S+) queued", queue(wb)[1]).group(1)
    assert train_handlers.cancel_job(wb, None) == [run_id, f'<span class="em-message-ok">cancel requested for run '
                                                           f'{run_id}</span>']
    assert wb.store.run(run_id)["status"] == "cancelled"
    shown, progress, _, _, _, _, cancel, _, reported, column = train_handlers.pick_job(wb, run_id, None,
                                                                                      panel_size=PANEL)[:10]
    assert shown == run_id and 'data-status="cancelled"' in progress and "cancelled before it started" in progress
    assert cancel.interactive is False and reported == run_id and column.visible is False  # no gate report


def test_showing_the_tab_follows_production(wb):
    *panel, choices = train_handlers.tab_shown(wb, None, panel_size=PANEL)
    assert panel == [gr.skip()] * PANEL
    assert choices.choices[0] == (f"production model (run {PRODUCTION})", "production")
    assert (f"run {PRODUCTION} (production)", PRODUCTION) in choices.choices
    promote(wb.store, run_id=CANDIDATE, actor="ana", override=True, reason="sirens matter more")
    column, reported, verdict, *_ = train_handlers.tab_shown(wb, CANDIDATE, panel_size=PANEL)
    assert column.visible is True and reported == CANDIDATE and "This run is the production model." in verdict
    assert train_handlers.tab_shown(wb, CANDIDATE, panel_size=PANEL)[-1].choices[0] == (
        f"production model (run {CANDIDATE})", "production")


# --- Runs: the overview and one run ---------------------------------------------------------------
def test_the_run_list_marks_production_and_the_overview_redraws_only_when_the_store_moved(wb, session):
    table = runs_views.runs_frame(wb).set_index("run")
    assert table.loc[PRODUCTION, ["kind", "status", "production", "gates", "test accuracy (all clips)"]].tolist() == [
        "train", "succeeded", "\u2605 production", "pass", "1.0000"]  # gated when promoted
    assert table.loc[CANDIDATE, ["production", "gates", "test accuracy (all clips)", "test F1 macro"]].tolist() == [
        "", "-", "0.8333", "0.7833"]
    assert table.loc[f"{CANDIDATE}-audit", "kind"] == "audit"
    assert table.loc[cancelled(session, "resumable"), "status"] == "cancelled"
    seen, production, *_ = runs_handlers.overview(wb, None, None, None)
    assert f"Production: <b>run {PRODUCTION}</b>" in production
    assert runs_handlers.overview(wb, seen, None, None) == [gr.skip()] * 6
    runs_handlers.evaluate_gates(wb, CANDIDATE)  # a gate report moves the signature
    now, _, runs, _, baseline, candidate = runs_handlers.overview(wb, seen, PRODUCTION, "gone")
    assert now != seen and runs.set_index("run").loc[CANDIDATE, "gates"] == "fail (2)"
    assert baseline.value == PRODUCTION and candidate.value is None


def test_the_tab_opens_on_production_with_its_plots_and_no_candidate(wb):
    selected, title, confusion, reliability, curves, metrics, breakdowns, _, downloads, message, candidate, resume, \
        column, _, verdict, *_ = runs_handlers.first_view(wb, "test")
    assert selected == PRODUCTION and f"<b>run {PRODUCTION}</b> &middot; train run &middot; succeeded" in title
    assert Path(confusion).is_file() and Path(confusion).parent != Path(wb.store.run(PRODUCTION)["run_dir"])
    assert reliability is None and curves is None  # no such plots in the run folder
    assert metrics.columns.tolist() == ["class", "recall"] and metrics["class"].tolist() == CLASSES
    assert "no metadata breakdowns for the test split" in breakdowns.iloc[0, 0]
    assert downloads.visible is False and message == "" and candidate == gr.skip() and resume.visible is False
    assert column.visible is True and "This run is the production model." in verdict  # gated when promoted
    assert runs_handlers.change_split(wb, PRODUCTION, "val")[3].iloc[0, 0] == (
        f"run {PRODUCTION} has no metrics for the val split")
    assert runs_handlers.change_split(wb, None, "val") == gr.skip()


def test_gates_are_evaluated_for_training_runs_and_a_failing_run_offers_only_the_override(wb):
    with pytest.raises(ValueError, match="Select a training run in the table first"):
        runs_handlers.evaluate_gates(wb, None)
    with pytest.raises(ValueError, match=f"Run {CANDIDATE}-audit is an audit; gates are evaluated for training runs"):
        runs_handlers.evaluate_gates(wb, f"{CANDIDATE}-audit")
    column, reported, verdict, checklist, criteria, *_, promote_button, override, message = (
        runs_handlers.evaluate_gates(wb, CANDIDATE))
    assert column.visible is True and reported == CANDIDATE
    assert f"2 gate(s) failed: production stays run {PRODUCTION} unless a person overrides." in verdict
    failed = re.findall(r"<tr><td>([^<]+)</td><td style='color:#c0392b", criteria)
    assert failed == ["accuracy[emergency_sirens]", "regression[emergency_sirens]"] and "Regression check" in checklist
    assert promote_button.interactive is False and override.interactive is True
    assert message == f'<span class="em-message-ok">gates of run {CANDIDATE} evaluated</span>'
    panel = runs_handlers.open_run(wb, CANDIDATE, "test")[-PANEL:]
    assert panel[2] == verdict and runs_handlers.open_run(wb, CANDIDATE, "test")[10].value == CANDIDATE


# --- Runs: jobs from the tab --------------------------------------------------------------------------
def test_resume_is_offered_only_for_a_cancelled_run_with_a_resume_point_and_queued_once(wb, session):
    resumable, fresh = cancelled(session, "resumable"), cancelled(session, "fresh")
    offered = {run_id: runs_handlers.resume_button(wb, wb.store.run(run_id)).visible
               for run_id in (resumable, fresh, PRODUCTION, f"{PRODUCTION}-audit")}
    assert offered == {resumable: True, fresh: False, PRODUCTION: False, f"{PRODUCTION}-audit": False}
    title = runs_handlers.open_run(wb, resumable, "test")[1]
    assert "cancelled" in title and "audit the run to evaluate it; or resume it." in title
    with pytest.raises(ValueError, match="Enter your name"):
        runs_handlers.queue_resume(wb, None, " ", resumable)
    with pytest.raises(StoreError, match=f"run {fresh} has no saved state to resume from"):
        runs_handlers.queue_resume(wb, None, "dee", fresh)
    message, button = runs_handlers.queue_resume(wb, None, "dee", resumable)
    assert f"resume of run {resumable} queued #1: it continues from its last finished epoch" in message
    assert 'data-tab="Train">Train tab</a>' in message and button.visible is False
    assert runs_handlers.resume_button(wb, wb.store.run(resumable)).visible is False  # its job waits: not twice
    seen = runs_handlers.overview(wb, None, None, None)[0]
    *_, title, button = runs_handlers.tick(wb, None, None, None, resumable)
    assert f"<b>run {resumable}</b>" in title and button.visible is False
    assert runs_handlers.tick(wb, seen, None, None, resumable)[-2:] == [gr.skip(), gr.skip()]


def test_an_audit_is_queued_for_a_succeeded_run_only(wb, session):
    message = runs_handlers.queue_audit(wb, None, "cy", CANDIDATE)
    assert message.startswith(f'<span class="em-message-ok">audit of run {CANDIDATE} queued #1: its progress shows')
    assert train_progress.jobs_frame(wb)[["run", "job", "by"]].values.tolist() == [[CANDIDATE, "audit", "cy"]]
    resumable = cancelled(session, "resumable")
    with pytest.raises(ValueError, match=f"run {resumable} is a cancelled train run; only a succeeded training run"):
        runs_handlers.queue_audit(wb, None, "cy", resumable)


# --- Runs: compare, downloads, rollback ---------------------------------------------------------------
def test_two_runs_compared_name_the_clip_the_candidate_broke(wb):
    with pytest.raises(ValueError, match="Choose two different runs to compare"):
        runs_handlers.compare(wb, PRODUCTION, PRODUCTION, "test")
    summary, deltas, picture, breakdowns, flips, player = runs_handlers.compare(wb, PRODUCTION, CANDIDATE, "test")
    assert f"<b>{CANDIDATE}</b> against <b>{PRODUCTION}</b> on 6 test clips" in summary
    assert "Fixed 0 clip(s), broke 1." in summary and Path(picture).is_file() and player == ""
    assert deltas.set_index("class").loc["emergency_sirens", "accuracy change"] == "-0.5000"
    assert flips[["flip", "label", "baseline predicted", "candidate predicted"]].values.tolist() == [
        ["broken", "emergency_sirens", "emergency_sirens", "alert_sounds"]]
    heard = runs_handlers.play_flip(wb, CANDIDATE, flips.iloc[0].tolist())
    assert f'data-clip="{flips["clip"].iloc[0]}"' in heard and "candidate says alert_sounds" in heard


def test_downloads_hold_the_report_predictions_and_checkpoint(wb, session):
    files = runs_handlers.prepare_downloads(wb, CANDIDATE)
    paths = [Path(p["path"]) for p in files.value]
    assert files.visible is True
    assert [p.name for p in paths] == [f"{CANDIDATE}-report.json", f"{CANDIDATE}-predictions.csv",
                                       f"{CANDIDATE}-checkpoint.zip"]
    report = json.loads(paths[0].read_text())
    assert report["run"]["id"] == CANDIDATE and report["gate_report"] is None and report["promotions"] == []
    assert len(pd.read_csv(paths[1])) == 15 and "config.json" in zipfile.ZipFile(paths[2]).namelist()
    resumable = cancelled(session, "resumable")
    with pytest.raises(StoreError, match=f"run {resumable} has no predictions to download"):
        runs_handlers.prepare_downloads(wb, resumable)


def test_a_rollback_needs_a_reason_and_a_model_to_go_back_to_then_restores_it(wb):
    with pytest.raises(ConfigError, match="reason: a rollback needs a reason"):
        runs_handlers.ask_rollback(wb, None, "ana", "  ")
    with pytest.raises(StoreError, match=f"nothing to roll back to: run {PRODUCTION} is the only model"):
        runs_handlers.ask_rollback(wb, None, "ana", "checking")
    promote(wb.store, run_id=CANDIDATE, actor="ana", override=True, reason="sirens matter more")
    confirm, change = runs_handlers.ask_rollback(wb, None, "ana", "checking")
    assert confirm["visible"] is True
    assert change == (f"<b>production goes from run {CANDIDATE} (test 0.833) to run {PRODUCTION} (test 1.000).</b> "
                      "Confirm to roll back.")
    assert wb.store.production_run() == CANDIDATE  # asking wrote nothing
    message, reason, hidden, _, production, _, history, *_ = runs_handlers.roll_back(wb, None, "ana", "checking",
                                                                                     None, None, None)
    assert message == (f'<span class="em-message-ok">production rolled back from run {CANDIDATE} to run '
                       f'{PRODUCTION}</span>')
    assert reason == "" and hidden["visible"] is False and f"Production: <b>run {PRODUCTION}</b>" in production
    assert history[["action", "actor", "reason"]].values.tolist()[0] == ["rollback", "ana", "checking"]
    assert wb.store.production_run() == PRODUCTION
    assert gate_panel.load_report(wb, CANDIDATE)["passed"] is False  # the override's report stays with the run


# --- the gate panel's decisions -------------------------------------------------------------------
def test_a_failing_run_is_not_promoted_and_an_override_needs_a_reason_then_is_signed(wb):
    gate_panel.evaluate(wb, CANDIDATE)
    *_, promote_button, override, message = gate_panel.promote_run(wb, CANDIDATE, "ana")
    assert wb.store.production_run() == PRODUCTION and override.interactive is True
    assert message.startswith(f'<span class="em-message-ok">run {CANDIDATE} NOT promoted: 2 gate(s) failed')
    for no_reason in (None, "  "):
        *_, message = gate_panel.override_run(wb, CANDIDATE, "ana", no_reason)
        assert message == f'<span class="em-message-error">{gate_panel.OVERRIDE_NEEDS_REASON}</span>'
    assert wb.store.production_run() == PRODUCTION and len(wb.store.promotions()) == 1
    *_, promote_button, override, message = gate_panel.override_run(wb, CANDIDATE, "bo", " heard every regression ")
    assert wb.store.production_run() == CANDIDATE and (promote_button.interactive, override.interactive) == (False, False)
    latest = wb.store.promotions().iloc[0]
    assert (latest.run_id, latest.action, latest.actor, latest.reason) == (CANDIDATE, "override", "bo",
                                                                            "heard every regression")


def test_a_regression_row_plays_the_clip_with_what_each_model_said(wb):
    regressions = gate_panel.evaluate(wb, CANDIDATE)[6]
    assert len(regressions) == 1
    clip_id, label, before, now = regressions.iloc[0].tolist()
    shown = gate_panel.play_regression(wb, CANDIDATE, [clip_id, label, before, now])
    assert f"clip {clip_id}: label emergency_sirens; production said emergency_sirens, this run says alert_sounds" in shown
    assert "<audio" in shown
