"""The job manager without a browser: real trainer and audit children on a small real session.

Queueing, the audit and gates after training, cancelling (queued, training, auditing), a child
that dies mid-run, a failing after-training step, and runs left behind by a stopped server: in
every case the job says what happened, the store says the same, and the session stays usable.
"""
from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest

from core.config import ConfigError
from core.store import Store, StoreError
from core.train import run_training
from pipelines import finetune
from pipelines.promotion import GATE_REPORT_FILE, GATES_DIR
from pipelines.importing import import_dataset
from test_train import FAST, make_dataset
from workbench.job_queue import JobManager

pytestmark = pytest.mark.slow
LONG = [*FAST, "train.epochs=200"]  # long enough to be caught running


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("jobs-data") / "ds")


@pytest.fixture
def store(tmp_path, dataset):
    with Store.open(tmp_path / "session") as opened:
        import_dataset(opened, dataset, group_pattern=r"^(rec\d+)-", progress=False)
        yield opened


def wait_until(predicate, *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


def test_jobs_queue_run_in_order_are_ingested_audited_and_gated(store):
    manager = JobManager(store)
    first = manager.submit(preset="demo-fast", overrides=FAST, submitted_by="ana", init_from="none")
    second = manager.submit(preset="demo-fast", overrides=[*FAST, "train.epochs=2"], submitted_by="ben", init_from="none")
    wait_until(lambda: manager.current() == first.run_id, timeout_s=10, what="the first job to start")
    assert manager.queue() == [second.run_id]
    assert manager.snapshot(second.run_id).status == "queued"
    assert store.run(second.run_id)["status"] == "queued"

    done = manager.wait(first.run_id, timeout_s=240)
    assert done.status == "succeeded", done.error
    assert done.step == done.total_steps == len([p for p in done.curve if p["series"] == "train loss (per step)"])
    assert {p["series"] for p in done.curve} >= {"validation loss", "validation accuracy", "validation F1 macro"}
    assert any(line.startswith("epoch 4:") for line in done.log)
    assert done.result["status"] == "succeeded"

    later = manager.wait(second.run_id, timeout_s=240)
    assert later.status == "succeeded", later.error
    assert later.epochs == 2
    # The writer ingested both: statuses, curves, metrics and predictions are in the store.
    for run_id in (first.run_id, second.run_id):
        assert store.run(run_id)["status"] == "succeeded"
        assert not store.run_history(run_id).empty
        assert not store.run_metrics(run_id, split="test").empty
        assert len(store.predictions(run_id)) == len(store.clips())
    assert store.run(first.run_id)["finished_at"] < store.run(second.run_id)["finished_at"]
    assert manager.queue() == [] and manager.current() is None
    # After training, each run was audited by itself and its gates evaluated.
    for job in (done, later):
        audit_run = store.run(job.audit_run_id)
        assert audit_run["kind"] == "audit" and audit_run["parent_run_id"] == job.run_id
        assert audit_run["status"] == "succeeded"
        assert job.audit_done == job.audit_total == len(store.clips())
        assert job.state == ("trained, gates passed" if job.gates_passed else "trained, gates failed")
        written = json.loads((job.run_dir / GATES_DIR / GATE_REPORT_FILE).read_text())
        assert job.gates_passed is written["passed"]
        assert any(line.startswith("[fail] ") or line.startswith("[pass] ") for line in job.log)
    assert store.production_run() is None  # promotion is left to a person


def test_invalid_settings_are_refused_before_anything_is_queued(store):
    manager = JobManager(store, after_training=None)
    with pytest.raises(ConfigError, match=r"train\.epochs: 0 is out of range"):
        manager.submit(preset="demo-fast", overrides=["train.epochs=0"], submitted_by="ana")
    with pytest.raises(ValueError, match="submitted_by"):
        manager.submit(preset="demo-fast", overrides=FAST, submitted_by=" ")
    assert store.runs().empty and manager.jobs() == []


def test_cancel_a_running_job_and_a_queued_one(store):
    manager = JobManager(store, after_training=None)
    running = manager.submit(preset="demo-fast", overrides=LONG, submitted_by="ana", init_from="none")
    waiting = manager.submit(preset="demo-fast", overrides=FAST, submitted_by="ana", init_from="none")

    cancelled = manager.cancel(waiting.run_id)
    assert cancelled.status == "cancelled" and cancelled.error == "cancelled before it started"
    assert store.run(waiting.run_id)["status"] == "cancelled"
    assert manager.queue() == []

    wait_until(lambda: manager.snapshot(running.run_id).epoch >= 1.0, timeout_s=120, what="the first epoch")
    manager.cancel(running.run_id)
    done = manager.wait(running.run_id, timeout_s=120)
    assert done.status == "cancelled"
    assert done.step < done.total_steps
    assert any(line.startswith("cancelled at step") for line in done.log)
    row = store.run(running.run_id)
    assert row["status"] == "cancelled"
    assert store.predictions(running.run_id).empty  # cancel stops at once: nothing evaluated (issue 12 §5)
    assert not store.run_history(running.run_id).empty  # but its curves were kept and ingested
    with pytest.raises(ValueError, match="already cancelled"):
        manager.cancel(running.run_id)


def test_a_child_that_dies_fails_its_job_with_the_reason_and_the_next_job_runs(store):
    manager = JobManager(store, after_training=None)
    doomed = manager.submit(preset="demo-fast", overrides=LONG, submitted_by="ana", init_from="none")
    wait_until(lambda: manager.snapshot(doomed.run_id).step >= 1, timeout_s=120, what="the first step")
    pid = int(re.search(r"pid (\d+)", "\n".join(manager.snapshot(doomed.run_id).log)).group(1))
    os.kill(pid, signal.SIGKILL)  # no result.json, no goodbye

    crashed = manager.wait(doomed.run_id, timeout_s=60)
    assert crashed.status == "failed"
    assert "without a result" in crashed.error and "exit code -9" in crashed.error
    assert store.run(doomed.run_id)["status"] == "failed"
    assert "without a result" in store.run(doomed.run_id)["error"]

    after = manager.submit(preset="demo-fast", overrides=[*FAST, "train.epochs=1"], submitted_by="ana", init_from="none")
    assert manager.wait(after.run_id, timeout_s=240).status == "succeeded"


def test_a_failure_inside_the_child_is_shown_with_its_message(store):
    manager = JobManager(store, after_training=None)
    # The CNN refuses its channel list only when the child builds it.
    job = manager.submit(preset="demo-fast", overrides=[*FAST, "model.cnn_channels=[]"], submitted_by="ana",
                         init_from="none")
    done = manager.wait(job.run_id, timeout_s=120)
    assert done.status == "failed"
    assert "model.cnn_channels: need a non-empty list of positive ints" in done.error
    assert any(line.startswith("error: ") for line in done.log)


def test_an_after_training_step_that_raises_fails_the_job_but_keeps_the_trained_run(store):
    seen = []

    class AuditThatBreaks:
        def run(self, manager, job):
            seen.append(job.run_id)
            manager.set_phase(job, "auditing", "auditing the new model")
            raise RuntimeError("audit exploded")

        def cancel(self, manager, job):
            raise AssertionError("nobody cancelled")

    manager = JobManager(store, after_training=AuditThatBreaks())
    job = manager.submit(preset="demo-fast", overrides=[*FAST, "train.epochs=1"], submitted_by="ana", init_from="none")
    done = manager.wait(job.run_id, timeout_s=240)
    assert seen == [job.run_id]
    assert done.status == "failed" and done.error == "RuntimeError: audit exploded"
    assert store.run(job.run_id)["status"] == "succeeded"  # training itself succeeded and was ingested
    assert not store.predictions(job.run_id).empty


def test_runs_left_by_a_stopped_server_are_ingested_or_failed(store):
    finished = finetune.prepare_finetune(store, preset="demo-fast", overrides=[*FAST, "train.epochs=1"], init_from="none")
    orphan = finetune.prepare_finetune(store, preset="demo-fast", overrides=FAST, init_from="none")
    store.set_run_status(finished.run_id, "running")
    store.set_run_status(orphan.run_id, "running")
    run_training(finished.run_dir)  # the child finished while no workbench was following it

    JobManager(store, after_training=None)
    assert store.run(finished.run_id)["status"] == "succeeded"
    assert not store.predictions(finished.run_id).empty
    assert store.run(orphan.run_id)["status"] == "failed"
    assert "interrupted" in store.run(orphan.run_id)["error"]


def test_cancel_during_the_audit_keeps_the_trained_run_and_stops_the_audit(store):
    manager = JobManager(store)
    job = manager.submit(preset="demo-fast", overrides=[*FAST, "train.epochs=1"], submitted_by="ana", init_from="none")
    wait_until(lambda: not store.runs(kind="audit").empty and manager.snapshot(job.run_id).phase == "auditing",
               timeout_s=240, what="the audit to start")
    manager.cancel(job.run_id)
    done = manager.wait(job.run_id, timeout_s=120)
    assert done.status == "cancelled" and "trained run is kept" in done.error
    assert done.gates_passed is None
    assert store.run(job.run_id)["status"] == "succeeded"
    # The cancel file exists before the audit child has predicted anything: it stops at its first batch.
    assert store.runs(kind="audit").status.tolist() == ["cancelled"]


def test_cancel_while_the_child_is_starting_is_a_cancel_not_a_failure(store):
    manager = JobManager(store, after_training=None)
    job = manager.submit(preset="demo-fast", overrides=FAST, submitted_by="ana", init_from="none")
    wait_until(lambda: "training process started" in "\n".join(manager.snapshot(job.run_id).log), timeout_s=30,
               what="the child to be launched")
    manager.cancel(job.run_id)  # SIGTERM while the child is still importing: it dies without a result
    done = manager.wait(job.run_id, timeout_s=120)
    assert done.status == "cancelled", done.error
    assert store.run(job.run_id)["status"] == "cancelled"


def test_a_run_trained_outside_the_workbench_is_audited_and_gated_as_a_job(store):
    trained = finetune.finetune(store, preset="demo-fast", overrides=[*FAST, "train.epochs=1"], init_from="none",
                                progress=False)  # e.g. `earmark train` while no server ran
    assert trained.status == "succeeded" and store.runs(kind="audit").empty
    manager = JobManager(store)
    with pytest.raises(ValueError, match="submitted_by"):
        manager.submit_audit(run_id=trained.run_id, submitted_by="")
    with pytest.raises(StoreError, match="no run with id 'nope'"):
        manager.submit_audit(run_id="nope", submitted_by="ana")

    queued = manager.submit_audit(run_id=trained.run_id, submitted_by="ana")
    cancelled = manager.submit(preset="demo-fast", overrides=FAST, submitted_by="ana", init_from="none")
    with pytest.raises(ValueError, match=f"run {trained.run_id} already has an unfinished audit job"):
        manager.submit_audit(run_id=trained.run_id, submitted_by="ben")
    manager.cancel(cancelled.run_id)
    done = manager.wait(queued.run_id, timeout_s=240)
    assert (done.kind, done.status, done.phase) == ("audit", "succeeded", "done"), done.error
    written = json.loads((trained.run_dir / GATES_DIR / GATE_REPORT_FILE).read_text())
    assert done.fraction_done() == 1.0 and done.gates_passed is written["passed"]  # the job reports what was written
    assert {point["series"] for point in done.curve} >= {"train loss (per step)", "validation accuracy"}  # as it trained
    audit_run = store.run(done.audit_run_id)
    assert (audit_run["kind"], audit_run["parent_run_id"], audit_run["status"]) == ("audit", trained.run_id, "succeeded")
    assert (trained.run_dir / GATES_DIR / GATE_REPORT_FILE).is_file()
    assert store.run(trained.run_id)["status"] == "succeeded"  # the audited run itself is left as it was

    with pytest.raises(ValueError, match="only a succeeded training run can be audited"):
        manager.submit_audit(run_id=done.audit_run_id, submitted_by="ana")
    blocker = manager.submit(preset="demo-fast", overrides=LONG, submitted_by="ana", init_from="none")
    again = manager.submit_audit(run_id=trained.run_id, submitted_by="ben")  # a finished job of the run gives way
    assert manager.queue()[-1] == trained.run_id
    manager.cancel(again.run_id)
    manager.cancel(blocker.run_id)
    assert manager.snapshot(again.run_id).status == "cancelled"
    manager.wait(blocker.run_id, timeout_s=120)
    assert store.run(trained.run_id)["status"] == "succeeded" and len(store.runs(kind="audit")) == 1
