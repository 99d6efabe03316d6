"""Promotion, override, rollback and run comparisons (writer side; A8, A9, C3).

A training run replaces production only when every gate of its preset's GatePolicy passes on
its latest audit of the policy's split; otherwise production stays where it is, unless a
person overrides, which is recorded with their name and reason. The gate report (every
criterion with its numbers, and the clips the candidate newly gets wrong, so they can be
listened to first) is saved in runs/<run>/gates/ and with the promotion. Rollback points
production back to the run that was production before the current one; the `promotions` table
keeps every step, so the production history is a stack: promote pushes, rollback pops.

Both models are scored on the same clips with the same labels: the candidate audit's labels,
and only clips both models predicted. Gates count every clip of the split as labelled at the
freeze, open quarantine included (GATE_QUARANTINE_RULE): quarantining a candidate's errors
cannot turn a failing gate into a pass. Quarantined clips are still counted apart (A1).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.breakdowns import plan_breakdowns
from core.checkpoint import checkpoint_dir, checkpoint_labels, has_checkpoint
from core.clip_sets import SPLIT_NAMES
from core.config import ConfigError, EvaluationConfig, ExperimentConfig
from core.evaluate import classification_report
from core.gates import compare_predictions, evaluate_gates, write_comparison
from core.run_folder import MANIFEST_FILE
from core.store import Store, StoreError
from pipelines.audit import latest_audit
from pipelines.detector_comparison import vad_baselines

GATE_QUARANTINE_RULE = ("gates count every clip of the split with its label at the audit's freeze, open "
                        "quarantine included: quarantine cannot improve them; review the queue to correct labels")
GATES_DIR = "gates"
GATE_REPORT_FILE = "gate_report.json"
COMPARISONS_DIR = "comparisons"


@dataclasses.dataclass
class ScoredRun:
    """A model's predictions on one split, ready to score: clip_id, label (as frozen by the
    source run), probs (model class order), evaluated (a label the model knows), quarantined
    (open in the queue at the freeze; still evaluated)."""
    model_run_id: str
    source_run_id: str
    classes: list[str]
    frame: pd.DataFrame
    manifest_path: Path | None = None  # the source run's frozen manifest: clip metadata for breakdowns
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)  # the model's breakdown settings


def scored_run(store: Store, run_id: str, *, split: str) -> ScoredRun:
    """Predictions of a run on `split`: an audit run's own; for a training run, its latest
    audit of that split, else the predictions it made when training ended."""
    run = store.run(run_id)
    if run["kind"] == "audit":
        model_run_id, source = run["parent_run_id"], run_id
    elif run["kind"] == "train":
        model_run_id, source = run_id, latest_audit(store, run_id, split=split) or run_id
    else:
        raise StoreError(f"run {run_id} is a {run['kind']} run: it has no predictions to compare")
    frame = store.predictions(source, split=split)
    if frame.empty:
        raise StoreError(f"run {run_id} has no predictions for the {split} split; audit it with "
                         f"'earmark audit --run {model_run_id} --splits {split}'")
    frozen_at = store.run(source)["manifest_decision_id"]
    quarantined = store.labels(as_of=frozen_at).set_index("clip_id")["quarantined"]
    classes = _classes(store, model_run_id)
    frame = frame.assign(evaluated=frame.label.isin(classes),
                         quarantined=frame.clip_id.map(quarantined).fillna(False).astype(bool))
    return ScoredRun(model_run_id=model_run_id, source_run_id=source, classes=classes, frame=frame,
                     manifest_path=Path(store.run(source)["run_dir"]) / MANIFEST_FILE,
                     evaluation=EvaluationConfig.from_dict((store.run(model_run_id)["config"] or {}).get("evaluation")))


def _classes(store: Store, model_run_id: str) -> list[str]:
    """The model's output classes, in probability-column order, from its checkpoint."""
    folder = checkpoint_dir(store.run(model_run_id)["run_dir"])
    if not has_checkpoint(folder):
        raise StoreError(f"run {model_run_id} has no checkpoint (none complete in {folder})")
    return checkpoint_labels(folder)


def _y_and_probs(scored: ScoredRun, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    index = {label: i for i, label in enumerate(scored.classes)}
    return frame.label.map(index).to_numpy(dtype=np.int64), np.stack(frame.probs.map(np.asarray).to_numpy())


def compare_scored(baseline: ScoredRun, candidate: ScoredRun) -> dict[str, Any]:
    """compare_predictions on the clips the candidate evaluated that the baseline also predicted."""
    if baseline.classes != candidate.classes:
        raise StoreError(f"runs {baseline.model_run_id} and {candidate.model_run_id} predict different classes "
                         f"({baseline.classes} vs {candidate.classes}); they cannot be compared clip by clip")
    frame = candidate.frame[candidate.frame.evaluated].merge(
        baseline.frame[["clip_id", "probs"]].rename(columns={"probs": "baseline_probs"}), on="clip_id")
    if frame.empty:
        raise StoreError(f"runs {baseline.model_run_id} and {candidate.model_run_id} have no evaluated clips in common")
    y, probs = _y_and_probs(candidate, frame)
    baseline_probs = np.stack(frame.baseline_probs.map(np.asarray).to_numpy())
    comparison = compare_predictions(classes=candidate.classes, clip_ids=frame.clip_id.to_numpy(), y_true=y,
                                     baseline_probs=baseline_probs, candidate_probs=probs)
    comparison.update(baseline_run_id=baseline.model_run_id, baseline_source=baseline.source_run_id,
                      candidate_run_id=candidate.model_run_id, candidate_source=candidate.source_run_id,
                      breakdowns=_breakdown_changes(candidate, frame, y, baseline_pred=baseline_probs.argmax(1),
                                                    candidate_pred=probs.argmax(1)))
    return comparison


def _breakdown_changes(candidate: ScoredRun, frame: pd.DataFrame, y: np.ndarray, *, baseline_pred: np.ndarray,
                       candidate_pred: np.ndarray) -> dict[str, dict[str, dict[str, Any]]]:
    """Both models' accuracy per metadata group on the compared clips ({column: {group: {n,
    baseline_accuracy, candidate_accuracy, accuracy_delta}}}), grouped as the candidate's
    manifest and evaluation settings say; {} when the source run kept no manifest."""
    if candidate.manifest_path is None or not candidate.manifest_path.is_file():
        return {}
    manifest = pd.read_parquet(candidate.manifest_path).drop_duplicates("clip_id").set_index("clip_id")
    plan = plan_breakdowns(manifest.reindex(frame.clip_id.to_numpy()).reset_index(), candidate.evaluation)
    rows = np.arange(len(frame))
    before = plan.report(rows, y_true=y, y_pred=baseline_pred, labels=candidate.classes)
    after = plan.report(rows, y_true=y, y_pred=candidate_pred, labels=candidate.classes)
    return {column: {group: {"n": now["n"], "baseline_accuracy": before[column]["groups"][group]["accuracy"],
                             "candidate_accuracy": now["accuracy"],
                             "accuracy_delta": now["accuracy"] - before[column]["groups"][group]["accuracy"]}
                     for group, now in after[column]["groups"].items()}
            for column in after}


def compare_runs(store: Store, *, baseline: str, candidate: str, split: str = "test") -> tuple[dict[str, Any], dict[str, Path]]:
    """The C3 comparison report between any two runs on a split, saved as JSON + PNG under the
    candidate's run folder (comparisons/<baseline>-<split>/); returns it and the file paths."""
    comparison = compare_scored(scored_run(store, baseline, split=split), scored_run(store, candidate, split=split))
    comparison["split"] = split
    folder = Path(store.run(candidate)["run_dir"]) / COMPARISONS_DIR / f"{baseline}-{split}"
    paths = write_comparison(folder, comparison, title=f"{split}: {candidate}\nminus {baseline}")
    return comparison, paths


def gate_report(store: Store, *, run_id: str) -> dict[str, Any]:
    """Evaluate the run's gates (its preset's GatePolicy) on its latest audit, against the
    production model when there is one, and against the VAD baselines of its latest detector
    comparison when the policy asks (beat_vads_at_snr_db); saved to runs/<run>/gates/. Raises
    StoreError when the run has no audit of the policy's split."""
    run = store.run(run_id)
    if run["kind"] != "train" or run["status"] != "succeeded":
        raise StoreError(f"run {run_id} is a {run['status']} {run['kind']} run; only a succeeded training run can be promoted")
    policy = ExperimentConfig.from_dict(run["config"]).gates
    sets = set(store.clip_sets()["name"])
    if policy.split not in SPLIT_NAMES and policy.split not in sets:
        raise StoreError(f"gates.split: {policy.split!r} is neither a split ({', '.join(SPLIT_NAMES)}) nor a clip set of "
                         f"this session ({', '.join(sorted(sets)) or 'none yet'}); build it with 'earmark expand-test'")
    audit_id = latest_audit(store, run_id, split=policy.split)
    if audit_id is None:
        raise StoreError(f"run {run_id} has no audit of the {policy.split} split yet; run "
                         f"'earmark audit --run {run_id}' first (the gates read it)")
    candidate = scored_run(store, audit_id, split=policy.split)
    evaluated = candidate.frame[candidate.frame.evaluated]
    if evaluated.empty:
        raise StoreError(f"audit {audit_id} scored no clips of the {policy.split} split (no clip has a label the model knows)")
    y, probs = _y_and_probs(candidate, evaluated)
    report = classification_report(y_true=y, probs=probs, labels=candidate.classes)
    production = store.production_run()
    production = None if production == run_id else production
    comparison = None
    if production is not None:
        baseline = scored_run(store, production, split=policy.split)
        if baseline.classes == candidate.classes:  # else the regression gate fails: a person decides
            comparison = compare_scored(baseline, candidate)
    baselines = (None if policy.beat_vads_at_snr_db is None
                 else vad_baselines(store, run_id=run_id, max_snr_db=policy.beat_vads_at_snr_db))
    gates = evaluate_gates(policy=policy, candidate=report, comparison=comparison, production_run_id=production,
                           vad_baselines=baselines)
    folder = Path(run["run_dir"]) / GATES_DIR
    result = {
        "run_id": run_id, "audit_run_id": audit_id, "split": policy.split, "passed": gates["passed"],
        "evaluated_clips": int(len(evaluated)), "quarantined_clips": int(evaluated.quarantined.sum()),
        "quarantine_rule": GATE_QUARANTINE_RULE,
        "production_run_id": production,
        "gates": gates,
        "newly_wrong": comparison["broken"] if comparison else [],
        "newly_right": comparison["fixed"] if comparison else [],
        "vad_baselines": baselines,
    }
    if comparison is not None:
        result["comparison_files"] = {k: str(v) for k, v in write_comparison(
            folder, comparison, title=f"{policy.split}: {run_id}\nminus production {production}").items()}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / GATE_REPORT_FILE).write_text(json.dumps(result, indent=2))
    return result


@dataclasses.dataclass
class PromotionOutcome:
    run_id: str
    promoted: bool
    action: str | None      # promote, override, or None when refused
    production: str | None  # production after the call
    report: dict[str, Any]

    def lines(self) -> list[str]:
        report = self.report
        if self.promoted:
            head = (f"run {self.run_id} promoted to production" if self.action == "promote"
                    else f"run {self.run_id} put in production by override despite failing gates")
        else:
            head = (f"run {self.run_id} NOT promoted: {len(report['gates']['failed'])} gate(s) failed; "
                    f"production stays {self.production}")
        lines = [head, f"  gates on {report['split']} (audit {report['audit_run_id']}, {report['evaluated_clips']} clips, "
                       f"{report['quarantined_clips']} of them in quarantine and counted as labelled)"
                       + (f" vs production {report['production_run_id']}" if report["production_run_id"] else "") + ":"]
        for criterion in report["gates"]["criteria"]:
            lines.append(f"    [{criterion['status']:>4}] {criterion['name']}: {criterion['detail']}")
        if report["newly_wrong"]:
            clips = ", ".join(f"{c['clip_id']} ({c['label']} -> {c['candidate']})" for c in report["newly_wrong"][:10])
            more = " ..." if len(report["newly_wrong"]) > 10 else ""
            lines.append(f"  newly wrong ({len(report['newly_wrong'])}): {clips}{more}")
        return lines


def promote(store: Store, *, run_id: str, actor: str, override: bool = False, reason: str | None = None) -> PromotionOutcome:
    """Promote run_id if every gate passes; with override=True (and a reason) even if not.
    A refusal changes nothing (the gate report is still saved in the run folder)."""
    actor = _check_actor(actor)
    if override:
        check_reason(reason, action="an override")
    if store.production_run() == run_id:
        raise StoreError(f"run {run_id} is already the production model")
    report = gate_report(store, run_id=run_id)
    action = "promote" if report["passed"] else "override" if override else None
    if action is not None:
        store.record_promotion(run_id, action=action, actor=actor, reason=reason, report=report)
    return PromotionOutcome(run_id=run_id, promoted=action is not None, action=action,
                            production=store.production_run(), report=report)


def production_history(store: Store) -> list[str]:
    """The production stack, oldest first: each promotion pushes its run, each rollback pops
    back to the run it names. The last entry is production now."""
    stack: list[str] = []
    for row in store.promotions().iloc[::-1].itertuples():  # promotions() is newest first
        if row.action == "rollback":
            while stack and stack[-1] != row.run_id:
                stack.pop()
            if not stack:
                stack.append(row.run_id)
        else:
            stack.append(row.run_id)
    return stack


def rollback_plan(store: Store) -> tuple[str, str, str]:
    """What a rollback would do, before it is done: (production now, the run it restores, the
    change in words with each run's test accuracy). StoreError when there is nothing to roll back."""
    stack = production_history(store)
    if not stack:
        raise StoreError("no production model yet: nothing to roll back")
    if len(stack) < 2:
        raise StoreError(f"nothing to roll back to: run {stack[-1]} is the only model in the production history")
    current, previous = stack[-1], stack[-2]
    change = (f"production goes from run {current} ({_test_accuracy(store, current)}) "
              f"to run {previous} ({_test_accuracy(store, previous)})")
    return current, previous, change


def _test_accuracy(store: Store, run_id: str) -> str:
    """The run's test accuracy as the gates read it: its latest audit's, else its own."""
    source = latest_audit(store, run_id, split="test") or run_id
    metrics = store.run_metrics(source, split="test")
    value = metrics[(metrics.name == "accuracy") & metrics.class_label.isna()].value
    return f"test {float(value.iloc[0]):.3f}" if len(value) else "not evaluated on test"


def rollback(store: Store, *, actor: str, reason: str | None) -> tuple[str, str]:
    """Point production back to the run that was production before the current one; returns
    (rolled back from, now in production). Like an override, it needs a reason."""
    actor = _check_actor(actor)
    check_reason(reason, action="a rollback")
    current, previous, _ = rollback_plan(store)
    store.record_promotion(previous, action="rollback", actor=actor, reason=reason.strip(), report={"rolled_back": current})
    return current, previous


def check_reason(reason: str | None, *, action: str) -> str:
    """The reason an override or a rollback is recorded with (they bypass or undo the gates)."""
    if not (reason and reason.strip()):
        raise ConfigError(f"reason: {action} needs a reason (--reason \"...\"), recorded with your name")
    return reason.strip()


def _check_actor(actor: str | None) -> str:
    if not actor or not actor.strip():
        raise ConfigError("actor: promotions and rollbacks are signed; give your name (--actor NAME)")
    return actor.strip()
