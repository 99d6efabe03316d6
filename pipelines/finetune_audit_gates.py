"""The one-click loop: fine-tune, then audit the new model, then evaluate its gates (A8).

The CLI (`earmark finetune`) runs the whole sequence with `finetune_audit_gates`; the
workbench's job queue trains the child itself (it shows live progress and cancels it) and
then calls `audit_then_gates` for the rest, so both run the same audit and the same gates.
Promotion happens only when asked (promote_if_passed) and every gate passes; otherwise
production stays and a person decides. When the inbox holds unlabelled clips and was scored
before, the new model ranks them again (pipelines/inbox.py): the next round of labelling asks
about what the model that learned from the last round still doubts.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.config import ConfigError, ExperimentConfig
from core.store import Store
from pipelines import finetune
from pipelines.audit import audit
from pipelines.inbox import rescore_after_training, waiting_for_rescore
from pipelines.child_process import cancel as cancel_child
from pipelines.promotion import gate_report, promote

EventCallback = Callable[[dict[str, Any]], None]
PhaseCallback = Callable[[str, str], None]          # phase name, what it means in words
CancelCheck = Callable[[], bool]


@dataclasses.dataclass
class LoopResult:
    """What the loop did; status is the furthest step's outcome (succeeded = audited and gated)."""
    run_id: str
    status: str                                      # succeeded, failed, cancelled
    training: dict[str, Any] = dataclasses.field(default_factory=dict)   # the trainer's result
    audit_run_id: str | None = None
    audit_lines: list[str] = dataclasses.field(default_factory=list)
    inbox_lines: list[str] = dataclasses.field(default_factory=list)  # the inbox re-scored by the new model
    gates: dict[str, Any] | None = None              # the gate report (gates/gate_report.json)
    promoted: bool = False
    error: str | None = None

    @property
    def gates_passed(self) -> bool | None:
        """None until the gates were evaluated."""
        return None if self.gates is None else bool(self.gates["passed"])

    def lines(self) -> list[str]:
        """Run, training verdict, audit, each gate criterion, the verdict, promotion."""
        accuracy = self.training.get("accuracy", {}).get("test")
        lines = [f"run {self.run_id}: training {self.training.get('status', self.status)}"
                 + (f", test accuracy {accuracy:.4f}" if accuracy is not None else "")]
        if self.audit_run_id:
            lines.append(f"audit {self.audit_run_id}")
        if self.gates is not None:
            lines += [f"  [{c['status']:>4}] {c['name']}: {c['detail']}" for c in self.gates["gates"]["criteria"]]
            lines.append(verdict_line(self.gates))
        lines += self.inbox_lines
        if self.promoted:
            lines.append(f"run {self.run_id} promoted to production")
        if self.error:
            lines.append(f"{self.status}: {self.error}")
        return lines


def verdict_line(report: dict[str, Any]) -> str:
    return ("every gate passes: ready to promote" if report["passed"] else
            f"{len(report['gates']['failed'])} gate(s) failed: production stays unless a person overrides")


def finetune_audit_gates(store: Store, *, preset: str, overrides: list[str] | None = None,
                         init_from: str | None = "production", processes: int = 1, promote_if_passed: bool = False,
                         actor: str | None = None, progress: bool = True, on_event: EventCallback | None = None,
                         on_phase: PhaseCallback | None = None, cancelled: CancelCheck = lambda: False) -> LoopResult:
    """Fine-tune with the preset, audit the new run, evaluate its gates, and promote it when
    promote_if_passed and every gate passes (actor signs the promotion). Ctrl-C during training
    cancels it cleanly; cancelled() is checked between the steps."""
    if promote_if_passed and not (actor and actor.strip()):
        raise ConfigError("actor: a promotion is signed by the person who asks for it; give a name")
    trained = finetune.finetune(store, preset=preset, overrides=overrides, init_from=init_from,
                                processes=processes, progress=progress)
    result = LoopResult(run_id=trained.run_id, status=trained.status, training=trained.result,
                        error=trained.result.get("error"))
    if trained.status != "succeeded":
        return result
    if cancelled():
        return dataclasses.replace(result, status="cancelled", error="cancelled after training")
    after = audit_then_gates(store, run_id=trained.run_id, progress=progress, on_event=on_event,
                             on_phase=on_phase, cancelled=cancelled)
    after.training = trained.result
    if promote_if_passed and after.gates_passed:
        after.promoted = promote(store, run_id=trained.run_id, actor=actor).promoted
    return after


def audit_then_gates(store: Store, *, run_id: str, progress: bool = False, on_event: EventCallback | None = None,
                     on_phase: PhaseCallback | None = None, cancelled: CancelCheck = lambda: False) -> LoopResult:
    """Audit a succeeded training run on every split, then evaluate its gates (saved in the run
    folder, where the Train and Runs tabs read them). A failed audit is the result's status."""
    show_phase = on_phase or (lambda phase, message: None)
    show_phase("auditing", "auditing the new model on the test, val and train splits")
    outcome = audit(store, run_id=run_id, progress=progress, on_event=on_event)
    result = LoopResult(run_id=run_id, status=outcome.status, audit_run_id=outcome.run_id,
                        audit_lines=outcome.lines(key_classes=_key_classes(store, run_id)), error=outcome.error)
    if outcome.status == "cancelled" or cancelled():
        return dataclasses.replace(result, status="cancelled", error=outcome.error or "cancelled after the audit")
    if outcome.status != "succeeded":
        return dataclasses.replace(result, status="failed", error=f"the audit of run {run_id} {outcome.status}: "
                                                                  f"{outcome.error}")
    show_phase("gates", "evaluating the promotion gates")
    result.gates = gate_report(store, run_id=run_id)
    if waiting_for_rescore(store) and not cancelled():
        show_phase("scoring", "re-scoring the inbox's unlabelled clips with the new model")
        result.inbox_lines = rescore_after_training(store, run_id=run_id, progress=progress, on_event=on_event).lines()
    return result


def cancel_audit(store: Store, run_id: str) -> None:
    """Stop the running audit child of run_id, if any (its run folder's cancel file)."""
    audits = store.runs(kind="audit")
    running = audits[(audits.parent_run_id == run_id) & (audits.status == "running")]
    for run_dir in running.run_dir:
        cancel_child(Path(run_dir))


def _key_classes(store: Store, run_id: str) -> list[str]:
    """The preset's key classes (listed first in the audit's extreme-off report)."""
    return list(ExperimentConfig.from_dict(store.run(run_id)["config"]).gates.key_classes)
