"""What a fine-tune job does after training: audit the new model, then evaluate its gates.

Both steps are issue 6's pipelines (pipelines/audit.py, pipelines/promotion.py), called from
the job manager's worker thread in the server, the session's one writer. The audit runs its
own child process; the gate report is saved in the run folder (gates/gate_report.json), where
the Train and Runs tabs read it. Promotion itself is left to a person.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.audit import audit
from pipelines.child_process import cancel as cancel_child
from pipelines.promotion import gate_report

if TYPE_CHECKING:
    from workbench.job_queue import Job, JobManager


class AuditAndGates:
    """The after-training step of every workbench fine-tune (A8: audit, then the gates decide)."""

    def run(self, manager: "JobManager", job: "Job") -> None:
        manager.set_phase(job, "auditing", "auditing the new model on the test, val and train splits")

        def on_event(event: dict[str, Any]) -> None:
            if event.get("type") == "start":
                manager.update(job, audit_total=event.get("clips"), audit_done=0)
            elif event.get("type") == "progress":
                manager.update(job, audit_done=event.get("done", 0), audit_total=event.get("total"))
            elif event.get("type") in ("warning", "error"):
                manager.log_line(job, f"audit {event['type']}: {event.get('message')}")

        outcome = audit(manager.store, run_id=job.run_id, progress=False, on_event=on_event)
        manager.update(job, audit_run_id=outcome.run_id)
        for line in outcome.lines(key_classes=_key_classes(manager, job)):
            manager.log_line(job, line)
        if outcome.status == "cancelled" or job.cancel_requested:
            return
        if outcome.status != "succeeded":
            raise RuntimeError(f"the audit of run {job.run_id} {outcome.status}: {outcome.error}")
        manager.set_phase(job, "gates", "evaluating the promotion gates")
        report = gate_report(manager.store, run_id=job.run_id)
        for criterion in report["gates"]["criteria"]:
            manager.log_line(job, f"[{criterion['status']}] {criterion['name']}: {criterion['detail']}")
        verdict = "every gate passes: ready to promote" if report["passed"] else (
            f"{len(report['gates']['failed'])} gate(s) failed: production stays unless a person overrides")
        manager.update(job, gates_passed=bool(report["passed"]))
        manager.log_line(job, verdict)

    def cancel(self, manager: "JobManager", job: "Job") -> None:
        """Stop the audit child of this job, if one is running (its run folder's cancel file)."""
        audits = manager.store.runs(kind="audit")
        running = audits[(audits.parent_run_id == job.run_id) & (audits.status == "running")]
        for run_dir in running.run_dir:
            cancel_child(Path(run_dir))


def _key_classes(manager: "JobManager", job: "Job") -> list[str]:
    """The preset's key classes (listed first in the audit's extreme-off report)."""
    config = manager.store.run(job.run_id)["config"] or {}
    return list(config.get("gates", {}).get("key_classes", []))


AUDIT_THEN_GATES = AuditAndGates()
