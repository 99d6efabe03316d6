"""Runs resume: a cancelled or killed run continues from its last finished epoch, in its own
folder, and ends with the metrics of an uninterrupted run of the same seed."""
from __future__ import annotations

import json
import os
import signal

import numpy as np
import pandas as pd
import pytest

import app
from core.store import Store
from pipelines import finetune as ft
from pipelines.importing import import_dataset
from test_train import FAST, make_dataset
from workbench.job_queue import JobManager

# Four epochs, no early stop, from scratch: what the interrupted runs must reproduce.
FOUR_EPOCHS = FAST + ["train.epochs=4"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "ds")


def open_session(folder, dataset) -> Store:
    store = Store.open(folder)
    import_dataset(store, dataset, group_pattern=r"^(rec\d+)-", progress=False)
    return store


@pytest.fixture
def session(tmp_path, dataset):
    with open_session(tmp_path / "session", dataset) as store:
        yield store


def interrupted_run(store: Store, *, after_epoch: int, kill: bool = False) -> tuple[ft.PreparedRun, dict]:
    """A run stopped as soon as it reports epoch `after_epoch`: cancelled (the cancel file and
    SIGTERM), or killed (SIGKILL: no result, a crash); returns it and its ingested result."""
    prepared = ft.prepare_finetune(store, preset="demo-fast", overrides=FOUR_EPOCHS, init_from="none")
    process = ft.launch(prepared.run_dir, module="core.train")

    def on_event(event):
        if event["type"] == "epoch" and event["epoch"] == after_epoch and process.poll() is None:
            if kill:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                ft.cancel(prepared.run_dir, process)

    # Read the events every 5 ms: tiny epochs on an idle machine take well under the default
    # 0.2 s poll, and a slower reader would see the epoch only after the run had ended.
    exit_code = ft.follow(prepared.run_dir, process, on_event=on_event, poll_s=0.005)
    return prepared, ft.ingest(store, prepared.run_id, exit_code=exit_code)


def assert_same_outcome(store: Store, run_id: str, reference_id: str) -> None:
    """Curves, every split's metrics and every probability equal to the last bit: the resumed
    process restores weights, optimizer, RNG and loop state, and all else is drawn from the seed."""
    pd.testing.assert_frame_equal(store.run_history(run_id), store.run_history(reference_id))
    pd.testing.assert_frame_equal(store.run_metrics(run_id), store.run_metrics(reference_id))
    ours, theirs = (store.predictions(r).sort_values("clip_id").reset_index(drop=True) for r in (run_id, reference_id))
    assert list(ours.predicted) == list(theirs.predicted)
    np.testing.assert_array_equal(np.stack(ours.probs.map(np.asarray)), np.stack(theirs.probs.map(np.asarray)))


@pytest.mark.slow
def test_a_cancelled_run_resumed_from_the_job_queue_ends_as_an_uninterrupted_run(session):
    reference = ft.finetune(session, preset="demo-fast", overrides=FOUR_EPOCHS, init_from="none", progress=False)
    assert reference.status == "succeeded", reference.result

    prepared, stopped = interrupted_run(session, after_epoch=2)
    assert stopped["status"] == "cancelled" and stopped["epochs_run"] == 2
    step = int(session.run_history(reference.run_id).query("epoch == 2").step.iloc[0])  # a step of epoch 3 may have run
    assert ft.prepare_resume(session, prepared.run_id).start_line() == (
        f"continues run {prepared.run_id} from its saved state after epoch 2 of 4 (step {step}), "
        "with the config and manifest it started with")

    manager = JobManager(session, after_training=None, poll_s=0.1)
    try:
        queued = manager.submit_resume(prepared.run_id, submitted_by="ann")
        assert queued.run_dir == prepared.run_dir and queued.curve  # the curves so far come with it
        job = manager.wait(prepared.run_id, timeout_s=300)
    finally:
        manager.shutdown()
    assert job.status == "succeeded", (job.error, list(job.log)[-5:])
    assert any(line.startswith("info: resuming after epoch 2 of 4") for line in job.log)
    assert session.run(prepared.run_id)["status"] == "succeeded"
    assert job.result["epochs_run"] == 4 and job.result["steps"] == reference.result["steps"]
    assert job.result["best_epoch"] == reference.result["best_epoch"]
    assert job.result["accuracy"] == reference.result["accuracy"]
    assert_same_outcome(session, prepared.run_id, reference.run_id)


@pytest.mark.slow
def test_a_killed_run_resumes_from_the_cli_in_its_own_folder(tmp_path, dataset, capsys):
    with open_session(tmp_path / "session", dataset) as store:
        prepared, crashed = interrupted_run(store, after_epoch=1, kill=True)
        assert crashed["status"] == "failed" and "without a result" in crashed["error"]
        runs_before = len(store.runs())

    code = app.main(["train", "--session", str(tmp_path / "session"), "--resume", prepared.run_id, "--json"])
    line = json.loads(capsys.readouterr().out)
    assert code == 0 and line["run_id"] == prepared.run_id and line["status"] == "succeeded", line
    events = [json.loads(e) for e in (prepared.run_dir / "events.jsonl").read_text().splitlines()]
    resumed = next(e for e in events if "resumed" in e)
    assert resumed["resumed"]["epochs_done"] == 1
    later_epochs = [e["epoch"] for e in events[events.index(resumed):] if e["type"] == "epoch"]
    assert later_epochs == [2, 3, 4]  # epoch 1 is not trained again
    with Store.open(tmp_path / "session", create=False) as store:
        assert len(store.runs()) == runs_before  # the same run, not a new one
        assert store.run(prepared.run_id)["error"] is None  # the crash's error went with the crash
        assert sorted(store.run_history(prepared.run_id).epoch.unique()) == [1.0, 2.0, 3.0, 4.0]
        assert len(store.predictions(prepared.run_id)) == len(prepared.manifest)


def test_resume_is_refused_in_one_line_when_there_is_nothing_to_continue(tmp_path, dataset, capsys):
    with open_session(tmp_path / "session", dataset) as store:
        done, unstarted = (ft.prepare_finetune(store, preset="demo-fast", overrides=FAST).run_id for _ in range(2))
        store.set_run_status(done, "succeeded")
        store.set_run_status(unstarted, "cancelled", error="cancelled before it started")
    session = str(tmp_path / "session")
    refusals = {
        done: f"earmark: error: run {done} succeeded: there is nothing to resume (audit or promote it instead)",
        unstarted: (f"earmark: error: run {unstarted} has no saved state to resume from (it stopped before its first "
                    "epoch ended); start a new run with 'earmark train --preset demo-fast'"),
    }
    for run_id, message in refusals.items():
        assert app.main(["train", "--session", session, "--resume", run_id]) == 2
        assert capsys.readouterr().err.strip() == message
    assert app.main(["train", "--session", session, "--resume", done, "--set", "train.epochs=2"]) == 2
    assert capsys.readouterr().err.strip() == ("earmark: error: --set does not apply to --resume: a resumed run "
                                               "continues with the config and start it was launched with")
    with pytest.raises(SystemExit) as stop:
        app.main(["train", "--session", session, "--resume", done, "--preset", "demo-fast"])
    assert stop.value.code == 2
    assert "argument --preset: not allowed with argument --resume" in capsys.readouterr().err
    with Store.open(tmp_path / "session", create=False) as store:
        with pytest.raises(ValueError, match="submitted_by: a resumed fine-tune is signed"):
            JobManager(store, after_training=None).submit_resume(unstarted, submitted_by=" ")
        assert store.run(done)["status"] == "succeeded" and store.run(unstarted)["status"] == "cancelled"
