"""The one-click loop outside the workbench: fine-tune, audit the new model, evaluate its gates,
promote only when asked and every gate passes (pipelines/finetune_audit_gates.py, `earmark finetune`).

A small real demo session (the shared one, 2-5 s clips), a tiny CNN and two epochs: each test
trains and audits for real."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import app
from conftest import copy_session
from core.run_folder import LOG_FILE
from core.store import Store
from pipelines.finetune_audit_gates import finetune_audit_gates
from pipelines.promotion import GATE_REPORT_FILE, GATES_DIR
from workbench.context import Workbench
from workbench.job_queue import JobManager

pytestmark = pytest.mark.slow
TINY = ["model.cnn_channels=[8, 16, 16, 16]", "train.epochs=2"]
LENIENT = ["gates.min_key_class_accuracy=0", "gates.min_class_accuracy=0"]
STRICT = ["gates.min_accuracy=1.0", "gates.min_key_class_accuracy=1.0"]  # planted label errors make 1.0 unreachable


@pytest.fixture(scope="module")
def demo(tmp_path_factory, small_demo_session) -> Path:
    return copy_session(small_demo_session, tmp_path_factory.mktemp("loop") / "session")


def written_report(store: Store, run_id: str) -> dict:
    return json.loads((Path(store.run(run_id)["run_dir"]) / GATES_DIR / GATE_REPORT_FILE).read_text())


def test_the_loop_promotes_when_asked_and_every_gate_passes(demo):
    phases = []
    with Store.open(demo, create=False) as store:
        before = store.production_run()
        outcome = finetune_audit_gates(store, preset="demo-fast", overrides=[*TINY, *LENIENT], init_from="none",
                                       promote_if_passed=True, actor="ana", progress=False,
                                       on_phase=lambda phase, message: phases.append(phase))
        report = written_report(store, outcome.run_id)
        assert outcome.status == "succeeded", outcome.error
        assert phases == ["auditing", "gates"]
        assert store.run(outcome.run_id)["status"] == "succeeded"
        assert store.run(outcome.audit_run_id)["parent_run_id"] == outcome.run_id
        assert report["audit_run_id"] == outcome.audit_run_id
        assert report["passed"] is True and outcome.gates_passed is True, report["gates"]["failed"]
        assert outcome.promoted and store.production_run() == outcome.run_id != before
    lines = outcome.lines()
    assert lines[0].startswith(f"run {outcome.run_id}: training succeeded, test accuracy ")
    assert f"audit {outcome.audit_run_id}" in lines
    assert sum(line.startswith("  [") for line in lines) == len(report["gates"]["criteria"])
    assert "every gate passes: ready to promote" in lines
    assert lines[-1] == f"run {outcome.run_id} promoted to production"


def test_earmark_finetune_with_failing_gates_keeps_production_and_exits_1(demo, capsys):
    with Store.open(demo, create=False) as store:
        before = store.production_run()
    args = ["finetune", "--session", str(demo), "--preset", "demo-fast", "--init-from", "none", "--quiet", "--json",
            "--promote-if-passed", "--actor", "ben"]
    capsys.readouterr()
    code = app.main([*args, *(f"--set={item}" for item in [*TINY, *STRICT])])
    line = json.loads(capsys.readouterr().out)
    with Store.open(demo, create=False) as store:
        report = written_report(store, line["run_id"])
        assert store.production_run() == before
        assert store.run(line["audit_run_id"])["status"] == "succeeded"
    assert code == 1
    assert line["status"] == "succeeded" and line["training"] == "succeeded"
    assert report["passed"] is False and line["gates_passed"] is False
    assert "accuracy" in line["failed"]  # the overall criterion that gates.min_accuracy=1.0 sets
    assert line["failed"] == report["gates"]["failed"]
    assert line["promoted"] is False


def test_earmark_finetune_without_promotion_reports_failing_gates_and_exits_0(demo, capsys):
    capsys.readouterr()
    code = app.main(["finetune", "--session", str(demo), "--preset", "demo-fast", "--init-from", "none", "--quiet",
                     *(f"--set={item}" for item in [*TINY, *STRICT])])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "gate(s) failed: production stays unless a person overrides" in out


def test_earmark_finetune_with_an_unknown_preset_is_one_line(demo, capsys):
    capsys.readouterr()
    assert app.main(["finetune", "--session", str(demo), "--preset", "no-such-preset", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("earmark: error: ") and err.count("\n") == 1, err


def test_the_workbench_queue_runs_the_same_loop_and_its_job_log_tells_the_story(demo):
    wb = Workbench.open(demo, with_jobs=True)
    try:
        assert isinstance(wb.jobs, JobManager)
        job = wb.jobs.submit(preset="demo-fast", overrides=[*TINY, *STRICT], submitted_by="cy", init_from="none")
        done = wb.jobs.wait(job.run_id, timeout_s=600)
        report = written_report(wb.store, job.run_id)
    finally:
        wb.jobs.shutdown()
        wb.store.close()
    assert (done.status, done.state) == ("succeeded", "trained, gates failed"), done.error
    assert done.gates_passed is report["passed"] is False
    assert done.audit_run_id == report["audit_run_id"]
    written = (done.run_dir / LOG_FILE).read_text()
    for line in done.log:  # every line the Train tab shows is in the file it points to
        assert line in written
    assert written.count("\n") >= len(done.log)
