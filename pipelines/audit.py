"""Audit runs (writer side): predict a model's clips, store what it gets wrong, queue proposals.

`audit()` freezes the clips of the chosen splits (current labels, and which are quarantined)
into runs/<audit id>/, runs `python -m core.audit_child` on that folder as a child, and ingests
its predictions, metrics and plots. Then:
- extreme-off clips become quarantine proposals (A1);
- with label_issues, K-fold cross-validated models (pipelines/crossval.py) rank every
  non-quarantined clip of those splits with cleanlab, and the top of the ranking becomes
  proposals too, each with its rank: as many as cleanlab estimates the labels hold issues,
  never more than a share of the ranked clips (AuditConfig);
- neither method proposes anything in a class the model it relies on is too weak on (the
  audited model's validation accuracy; the fold models' out-of-fold accuracy), and the summary
  says so; both score calibrated probabilities;
- the key-class report sets this audit's extreme-off counts per class beside the previous
  audit of the same split (A8 step 2: "fewer extreme-off sirens" as a number).
A clip already open in the queue is not proposed again, nor is a clip a person decided after
the proposing model's labels were frozen: that model never learned from the decision, so its
disagreement is stale (the cross-validated models learn from the audit's own freeze).
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from core.audit_child import CALIBRATION_SPLIT, EXTREME_OFF_FILE, AuditJob
from core.breakdowns import describe
from core.checkpoint import checkpoint_dir, has_checkpoint
from core.clip_sets import CLIP_SETS_COLUMN, members
from core.config import AuditConfig, ConfigError, load_preset
from core.label_issues import estimate_label_noise, label_issue_proposals, label_issue_queue_size, label_quality
from core.model_trust import trust_lines, trust_report, trusted_mask
from core.review_sampling import sample_spot_check
from core.run_folder import MANIFEST_FILE, METRICS_FILE, PREDICTIONS_FILE
from core.split_report import headline_accuracy
from core.store import Store, StoreError
from pipelines.crossval import CrossvalCancelled, cross_validate
from pipelines.finetune import breakdown_rows, freeze_manifest, metric_rows, new_run_id
from pipelines.child_process import run_child

AUDIT_ANNOTATOR = "audit"
SPLITS = ("train", "val", "test")
DEFAULT_SPLITS = ("test", "val", "train")
CROSSVAL_DIR = "crossval"
LABEL_ISSUES_FILE = "label_issues.parquet"
DEFAULT_CV_PRESET = "demo-fast"
# Fold models train shorter than the preset's 30 epochs: on the demo, 5-fold rankings from 8, 10
# and 16 epochs (and 4 folds at 8) found the same planted errors (bench/audit_quality.py), and
# K trainings are the audit's whole cost. Overrides given by the caller apply after these.
DEFAULT_CV_OVERRIDES = ("train.epochs=8", "train.early_stopping_patience=0")
# Decisions that mean a person has listened to the clip and settled it.
REVIEW_ACTIONS = ("tag", "relabel", "exclude", "include", "keep", "release")


@dataclasses.dataclass
class AuditOutcome:
    """What one audit did, for the CLI and the UI."""
    run_id: str
    run_dir: Path
    model_run_id: str
    status: str
    error: str | None = None
    counts: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    accuracy: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    proposals: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    key_classes: dict[str, Any] = dataclasses.field(default_factory=dict)
    label_issues: dict[str, Any] | None = None
    judging: dict[str, Any] = dataclasses.field(default_factory=dict)  # calibration, thresholds, trust (metrics.json)
    breakdowns: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # split -> column -> groups

    def lines(self, *, key_classes: Sequence[str] = ()) -> list[str]:
        """A readable summary; key_classes are listed first in the extreme-off report."""
        if self.status != "succeeded":
            return [f"audit {self.run_id} of run {self.model_run_id}: {self.status}" + (f": {self.error}" if self.error else "")]
        lines = [f"audit {self.run_id} of run {self.model_run_id}: succeeded"]
        for split, counts in self.counts.items():
            acc = self.accuracy.get(split, {})
            scored = (f"accuracy {acc['accuracy']:.4f} on every clip (given labels)" if "accuracy" in acc
                      else "no clips to score")
            if "accuracy_true" in acc:
                scored += f", {acc['accuracy_true']:.4f} (true labels)"
            if counts["quarantined"] and "accuracy_unquarantined" in acc:
                scored += f", {acc['accuracy_unquarantined']:.4f} without the quarantined"
            lines.append(f"  {split}: {counts['evaluated']} of {counts['clips']} clips scored, {scored}; "
                         f"{counts['quarantined']} in quarantine ({counts['quarantined_share']:.1%} of the split, "
                         "counted as labelled until reviewed)"
                         + (f", {counts['excluded_unknown_label']} with a label the model does not know"
                            if counts["excluded_unknown_label"] else "")
                         + (f" ({counts['excluded']} more excluded by a decision)" if counts["excluded"] else ""))
            lines += [f"    accuracy by {describe(column, entry)}" for column, entry in self.breakdowns.get(split, {}).items()]
        for split, report in self.key_classes.items():
            previous = report["previous_audit"]
            ordered = sorted(report["classes"], key=lambda c: (c not in key_classes, c))
            parts = []
            for label in ordered:
                entry = report["classes"][label]
                change = "" if entry["previous"] is None else f" (was {entry['previous']})"
                parts.append(f"{label} {entry['now']}{change}")
            against = f"vs audit {previous}" if previous else "no earlier audit of this split"
            lines.append(f"  extreme-off in {split} ({against}): " + ", ".join(parts))
        lines += _judging_lines(self.judging)
        if self.label_issues:
            lines += _label_issue_lines(self.label_issues)
        by_method = self.proposals.groupby("method").size().to_dict() if not self.proposals.empty else {}
        lines.append(f"  quarantine: {len(self.proposals)} new proposals"
                     + (" (" + ", ".join(f"{m} {n}" for m, n in sorted(by_method.items())) + ")" if by_method else ""))
        return lines


def audit(store: Store, *, run_id: str | None = None, splits: Sequence[str] | None = None,
          settings: AuditConfig | None = None, label_issues: bool = False, propose: bool = True,
          cv_preset: str = DEFAULT_CV_PRESET, cv_overrides: Sequence[str] = (),
          seed: int = 0, progress: bool = True, on_event: Callable[[dict[str, Any]], None] | None = None,
          **options: Any) -> AuditOutcome:
    """Audit run_id (default: the production model) on `splits`; see the module docstring.

    splits: split names and the session's clip set names (e.g. an expanded test set); default
    test, val, train and every clip set. propose=False scores only: no quarantine proposals.

    settings: how to judge and how far to trust the model (AuditConfig: calibration, thresholds,
    trust floor, queue size, ranking method and folds); options: AuditConfig fields to change on
    it (thresholds="fixed", max_label_prob=0.2, folds=3, ...), validated by AuditConfig: a bad
    name or value raises ConfigError naming it.
    label_issues: also rank label issues with settings.folds-fold cross-validation, fold models built
    from scratch with cv_preset + DEFAULT_CV_OVERRIDES + cv_overrides; the top of the ranking
    becomes proposals (cleanlab's estimate of the issues in the classes the fold models are
    trusted on, at most settings.max_queue_share of the ranked clips, or max_label_issues).
    on_event receives every child event (the UI's progress); progress shows tqdm bars.
    """
    splits = _check_splits(store, splits)
    settings = AuditConfig.from_dict({**(settings or AuditConfig()).to_dict(), **options}, prefix="audit.")
    method, folds = settings.method, settings.folds
    if label_issues:
        cv_overrides = [*DEFAULT_CV_OVERRIDES, *cv_overrides]
        cv_config = load_preset(cv_preset, cv_overrides, session_dir=store.session_dir)  # a bad preset fails before any work
    model_run_id = resolve_model_run(store, run_id)
    job, run_dir, manifest = _prepare(store, model_run_id=model_run_id, splits=splits, settings=settings,
                                      label_issues=label_issues, method=method, folds=folds, seed=seed,
                                      cv_preset=cv_preset, cv_overrides=list(cv_overrides))
    store.set_run_status(job.run_id, "running")
    outcome = AuditOutcome(run_id=job.run_id, run_dir=run_dir, model_run_id=model_run_id, status="running")
    try:
        result = run_child(run_dir, module="core.audit_child", desc="audit: predicting", progress=progress,
                           on_event=on_event)
        if result["status"] == "succeeded":
            _ingest(store, job, outcome)
            model_freeze = _decision_id(store.run(model_run_id)["manifest_decision_id"])
            proposals = [_drop_reviewed_since(store, pd.read_parquet(run_dir / EXTREME_OFF_FILE), since=model_freeze)]
            if label_issues:
                pool = manifest[~manifest["quarantined"] & manifest["split"].isin(splits)].reset_index(drop=True)
                ranked = _rank_label_issues(store, job, pool, config=cv_config, method=method, folds=folds, seed=seed,
                                            settings=settings, progress=progress, on_event=on_event)
                outcome.label_issues = ranked["summary"]
                proposals.insert(0, ranked["proposals"])  # first listed wins a clip both methods flag
            if propose:
                outcome.proposals = raise_proposals(store, pd.concat(proposals, ignore_index=True),
                                                    audit_run_id=job.run_id)
        outcome.status, outcome.error = result["status"], result.get("error")
    except (CrossvalCancelled, KeyboardInterrupt):
        outcome.status, outcome.error = "cancelled", "cancelled by the user"
    except RuntimeError as exc:  # a cross-validation fold that failed
        outcome.status, outcome.error = "failed", str(exc)
    except Exception as exc:
        store.set_run_status(job.run_id, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    outcome.key_classes = extreme_off_report(store, job.run_id) if outcome.counts else {}
    store.set_run_status(job.run_id, outcome.status, error=outcome.error, summary=_summary(outcome))
    return outcome


def resolve_model_run(store: Store, run_id: str | None) -> str:
    """The training run to audit: run_id, or the production model when None. Raises StoreError
    with what to do when there is none, or it has no checkpoint."""
    if run_id is None:
        run_id = store.production_run()
        if run_id is None:
            raise StoreError("no production model yet: name the run to audit (--run RUN_ID, the id 'earmark train' "
                             "printed), or promote one first")
    run = store.run(run_id)
    if run["kind"] != "train":
        raise StoreError(f"run {run_id} is a {run['kind']} run; audit a training run (its parent is {run['parent_run_id']})")
    if not has_checkpoint(checkpoint_dir(run["run_dir"])):
        raise StoreError(f"run {run_id} has no checkpoint in {checkpoint_dir(run['run_dir'])} "
                         f"(status {run['status']}); audit a run that finished training")
    return run_id


def _check_splits(store: Store, splits: Sequence[str] | None) -> list[str]:
    """The splits and clip sets to audit; None: the default splits and every clip set."""
    sets = list(store.clip_sets().sort_values("name")["name"])
    if splits is None:
        return [*DEFAULT_SPLITS, *sets]
    splits = list(dict.fromkeys(splits))
    unknown = [s for s in splits if s not in SPLITS and s not in sets]
    if not splits or unknown:
        allowed = ", ".join([*SPLITS, *sets])
        raise ConfigError(f"splits: {unknown or splits!r} must be a non-empty list drawn from {allowed} "
                          "(the splits and the session's clip sets)")
    return splits


def _prepare(store: Store, *, model_run_id: str, splits: list[str], settings: AuditConfig, label_issues: bool,
             method: str, folds: int, seed: int, cv_preset: str,
             cv_overrides: list[str]) -> tuple[AuditJob, Path, pd.DataFrame]:
    """Freeze the clips to audit, and the val clips the model is calibrated and checked on,
    into a new run folder and register the run."""
    as_of = store.last_decision_id()
    sets = {name: store.clip_set(name, as_of=as_of) for name in splits if name not in SPLITS}
    in_sets = {name: set(record["clip_ids"]) for name, record in sets.items()}
    manifest, as_of = freeze_manifest(store, as_of=as_of, quarantined_in=SPLITS, unsplit=set().union(*in_sets.values()))
    manifest = _with_clip_sets(manifest, in_sets)
    audited = _audited(manifest, splits)
    frozen = audited | (manifest["split"] == CALIBRATION_SPLIT).to_numpy()
    manifest = manifest[manifest["parent_clip_id"].isna().to_numpy() & frozen].reset_index(drop=True)
    state = _with_clip_sets(store.labels(as_of=as_of), in_sets)
    excluded_clips = state[(state.status == "ok") & state.excluded & state.parent_clip_id.isna()]
    if not _audited(manifest, splits).any():
        raise StoreError(f"no usable clips in the {', '.join(splits)} split(s) of this session: nothing to audit")
    run_id = new_run_id("audit")
    run_dir = Path(store.session_dir) / "runs" / run_id
    run_dir.mkdir(parents=True)
    manifest.to_parquet(run_dir / MANIFEST_FILE)
    model_run = store.run(model_run_id)
    model_dir = Path(model_run["run_dir"])
    job = AuditJob(run_id=run_id, model_run_id=model_run_id, checkpoint=str(checkpoint_dir(model_dir)),
                   cache_dir=str(Path(store.session_dir) / "cache"), splits=splits, judging=settings.to_dict(),
                   frozen_at_decision=as_of,
                   excluded={name: int(members(excluded_clips, name).sum()) for name in splits
                             if members(excluded_clips, name).any()},
                   evaluation=(model_run["config"] or {}).get("evaluation", {}),
                   clip_sets={name: int(record["id"]) for name, record in sets.items()})
    job.save(run_dir)
    config = {**dataclasses.asdict(job), "label_issues": label_issues}
    if label_issues:
        config.update(method=method, folds=folds, seed=seed, cv_preset=cv_preset, cv_overrides=cv_overrides)
    store.create_run(run_id, kind="audit", preset=None, config=config, parent_run_id=model_run_id,
                     manifest_decision_id=as_of, run_dir=run_dir)
    return job, run_dir, manifest


def _with_clip_sets(frame: pd.DataFrame, in_sets: dict[str, set[int]]) -> pd.DataFrame:
    """frame (with clip_id) and a clip_sets column: the names of the audited sets each clip is in."""
    return frame.assign(**{CLIP_SETS_COLUMN: [[name for name, ids in in_sets.items() if clip in ids]
                                              for clip in frame["clip_id"]]})


def _audited(frame: pd.DataFrame, splits: Sequence[str]) -> np.ndarray:
    """The rows in any of the audited splits or clip sets."""
    return np.logical_or.reduce([members(frame, name) for name in splits])


def _ingest(store: Store, job: AuditJob, outcome: AuditOutcome) -> None:
    """Store the child's predictions and metrics (plus extreme-off and exclusion counts)."""
    predictions = pd.read_parquet(outcome.run_dir / PREDICTIONS_FILE)
    predictions["probs"] = predictions["probs"].map(lambda p: np.asarray(p, dtype=np.float32).tolist())
    metrics = json.loads((outcome.run_dir / METRICS_FILE).read_text())
    extra = []
    for split, per_class in metrics["extreme_off"].items():
        extra += [(split, "extreme_off", label, n) for label, n in per_class.items()]
        extra.append((split, "extreme_off", None, sum(per_class.values())))
    rows = pd.concat([metric_rows(metrics), pd.DataFrame(extra, columns=["split", "name", "class_label", "value"])],
                     ignore_index=True)
    rows["value"] = rows["value"].astype(float)
    store.ingest_run_results(job.run_id, metrics=rows, predictions=predictions, breakdowns=breakdown_rows(metrics))
    outcome.counts = metrics["counts"]
    outcome.breakdowns = metrics["breakdowns"]
    outcome.judging = metrics["judging"]
    outcome.accuracy = {split: headline_accuracy(entry) for split, entry in metrics["splits"].items()}


def _rank_label_issues(store: Store, job: AuditJob, pool: pd.DataFrame, *, config, method: str, folds: int, seed: int,
                       settings: AuditConfig, progress: bool,
                       on_event: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    """Cross-validate on the pool, rank it with cleanlab, save the ranking beside the audit, and
    take the top as proposals: as many as the noise estimate says, in the trusted classes."""
    labels = sorted(pool["label"].unique())
    if len(labels) < 2:
        raise StoreError(f"label-issue ranking needs at least 2 classes among the non-quarantined clips; found {labels}")
    folder = Path(store.run(job.run_id)["run_dir"]) / CROSSVAL_DIR
    bar = tqdm(total=None, desc="label issues", unit="step", disable=not progress)

    def show(fold: int, event: dict[str, Any]) -> None:
        if on_event is not None:
            on_event({**event, "fold": fold + 1, "folds": folds})
        if event["type"] == "start":
            bar.set_description(f"label issues: fold {fold + 1}/{folds}")
            bar.reset(total=event["total_steps"])
        elif event["type"] == "step":
            bar.n = event["step"]
            bar.refresh()

    try:
        result = cross_validate(pool, folder=folder, config=config, labels=labels, cache_dir=job.cache_dir,
                                run_id=job.run_id, n_folds=folds, seed=seed, frozen_at_decision=job.frozen_at_decision,
                                workers=job.workers, calibrate=settings.calibrate, on_event=show)
    finally:
        bar.close()
    index = {label: i for i, label in enumerate(labels)}
    ranked_pool = pool.set_index("clip_id").loc[result.clip_ids]
    y = ranked_pool["label"].map(index).to_numpy()
    quality = label_quality(labels=y, pred_probs=result.probs, method=method)
    order = np.argsort(quality, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(1, len(order) + 1)
    pd.DataFrame({"clip_id": result.clip_ids, "fold": result.folds + 1, "label": ranked_pool["label"].to_numpy(),
                  "quality": quality, "rank": rank, "probs": list(result.probs)}).to_parquet(folder / LABEL_ISSUES_FILE)
    trust = trust_report(labels=y, pred_probs=result.probs, classes=labels, min_accuracy=settings.min_class_accuracy,
                         source="out-of-fold")
    trusted = trusted_mask(trust, labels)
    noise = estimate_label_noise(labels=y, pred_probs=result.probs)
    estimated = int(noise["issues"][trusted].sum())
    limit = label_issue_queue_size(estimated_issues=estimated, pool_size=len(y), max_share=settings.max_queue_share,
                                   max_label_issues=settings.max_label_issues)
    proposals = label_issue_proposals(clip_ids=result.clip_ids, labels=y, pred_probs=result.probs, classes=labels,
                                      method=method, limit=limit, folds=folds, trusted=trusted)
    disagreements = int((result.probs.argmax(1) != y).sum())
    summary = {"method": method, "folds": folds, "ranked": len(y), "disagreements": disagreements,
               "oof_accuracy": float(1 - disagreements / max(len(y), 1)),
               "fold_accuracy": [r.get("accuracy", {}).get("test") for r in result.fold_results],
               "fold_temperatures": [c["temperature"] for c in result.calibration], "trust": trust,
               "noise": {"rate": dict(zip(labels, map(float, noise["noise_rate"]))),
                         "issues": dict(zip(labels, map(int, noise["issues"]))), "estimated_in_judged": estimated},
               "queue": {"size": limit, "cap": int(settings.max_queue_share * len(y)),
                         "max_label_issues": settings.max_label_issues}}
    return {"proposals": proposals, "summary": summary}


def _judging_lines(judging: dict[str, Any]) -> list[str]:
    """How far the audit trusted its model: calibration, thresholds, the classes it refused."""
    if not judging:
        return []
    calibration, limits = judging["calibration"], judging["thresholds"]
    if "skipped" in calibration:
        lines = [f"  calibration: none ({calibration['skipped']}); temperature 1"]
    else:
        lines = [f"  calibration: temperature {calibration['temperature']:.2f} fitted on {calibration['n_samples']} "
                 f"{calibration['fitted_on']} clips; ECE {calibration['ece_before']:.3f} -> {calibration['ece_after']:.3f}, "
                 f"NLL {calibration['nll_before']:.3f} -> {calibration['nll_after']:.3f}"]
    judged = [c for c in limits["max_label_prob"] if c not in set(judging["trust"]["untrusted"])]
    if judged:
        low = [limits["max_label_prob"][c] for c in judged]
        high = [limits["min_top_prob"][c] for c in judged]
        source = "per class, from the calibrated val clips" if limits["mode"] == "per_class" else "fixed"
        lines.append(f"  extreme-off thresholds ({source}): label p <= {_span(low)}, top p >= {_span(high)}")
    return lines + [f"  {line}" for line in trust_lines(judging["trust"])]


def _label_issue_lines(li: dict[str, Any]) -> list[str]:
    lines = [f"  label issues: {li['folds']}-fold cross-validation ({li['method']}) ranked {li['ranked']} clips; "
             f"out-of-fold accuracy {li['oof_accuracy']:.4f}; fold temperatures "
             + ", ".join(f"{t:.2f}" for t in li["fold_temperatures"])]
    untrusted = set(li["trust"]["untrusted"])
    rates = ", ".join(f"{label} {rate:.1%}" + (" (not judged)" if label in untrusted else "")
                      for label, rate in li["noise"]["rate"].items())
    queue = li["queue"]
    sized = ("as --max-label-issues says" if queue["max_label_issues"] is not None
             else f"cleanlab estimates {li['noise']['estimated_in_judged']} issues in the judged classes, plus two "
                  f"standard errors; the share cap is {queue['cap']}")
    lines.append(f"  estimated label noise: {rates}; queue {queue['size']}: {sized}")
    return lines + [f"  {line}" for line in trust_lines(li["trust"], who="the fold models")]


def _span(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.3g}" if np.isclose(low, high) else f"{low:.3g}-{high:.3g}"


def _decision_id(value: Any) -> int | None:
    """A run's recorded decision id as an int; None where it recorded none (e.g. a handmade run)."""
    return None if value is None or pd.isna(value) else int(value)


def _drop_reviewed_since(store: Store, proposals: pd.DataFrame, *, since: int | None) -> pd.DataFrame:
    """Proposals without the clips a person decided after decision `since` (None: ever)."""
    log = store.decisions(since_id=since)
    reviewed = set(log[log.action.isin(REVIEW_ACTIONS) & ~log.undone].clip_id)
    return proposals[~proposals.clip_id.isin(reviewed)]


def raise_proposals(store: Store, proposals: pd.DataFrame, *, audit_run_id: str) -> pd.DataFrame:
    """Queue proposals (core.proposals.PROPOSAL_COLUMNS), one per clip (the first one listed wins),
    skipping clips already open in the queue. Returns what was raised."""
    if proposals.empty:
        return proposals
    state = store.labels().set_index("clip_id")
    fresh = proposals.drop_duplicates(subset="clip_id")
    fresh = fresh[~fresh.clip_id.map(state["quarantined"]).fillna(False).astype(bool)]
    fresh = fresh.assign(audit_run_id=audit_run_id).reset_index(drop=True)
    if not fresh.empty:
        store.raise_quarantine(fresh, annotator=AUDIT_ANNOTATOR)
    return fresh


def extreme_off_report(store: Store, audit_run_id: str) -> dict[str, Any]:
    """Extreme-off clips per class in each split of this audit, beside the previous succeeded
    audit of the same split (any model): {split: {previous_audit, classes: {label: {now,
    previous, change}}}}. Fewer is better; previous is None without an earlier audit."""
    run = store.run(audit_run_id)
    this = store.run_metrics(audit_run_id)
    this = this[(this.name == "extreme_off") & this.class_label.notna()]
    audits = store.runs(kind="audit")
    earlier = audits[(audits.status == "succeeded") & (audits.created_at < run["created_at"])]
    report = {}
    for split in (s for s in run["config"]["splits"] if s in set(this.split)):
        rows = this[this.split == split]
        previous_id, previous = None, {}
        for candidate in earlier.id:  # newest first
            found = store.run_metrics(candidate, split=split)
            found = found[(found.name == "extreme_off") & found.class_label.notna()]
            if not found.empty:
                previous_id, previous = candidate, dict(zip(found.class_label, found.value.astype(int)))
                break
        classes = {}
        for label, now in zip(rows.class_label, rows.value.astype(int)):
            before = previous.get(label) if previous_id else None
            classes[label] = {"now": int(now), "previous": before, "change": None if before is None else int(now) - before}
        report[split] = {"previous_audit": previous_id, "classes": classes}
    return report


def _summary(outcome: AuditOutcome) -> dict[str, Any]:
    return {"counts": outcome.counts, "accuracy": outcome.accuracy, "proposals": len(outcome.proposals),
            "key_classes": outcome.key_classes, "label_issues": outcome.label_issues, "judging": outcome.judging}


def latest_audit(store: Store, model_run_id: str, *, split: str) -> str | None:
    """The newest succeeded audit of model_run_id that covered `split`, or None."""
    audits = store.runs(kind="audit")
    for row in audits[(audits.status == "succeeded") & (audits.parent_run_id == model_run_id)].itertuples():
        if split in json.loads(row.config)["splits"]:
            return row.id
    return None


def spot_check(store: Store, *, since_run: str | None = None, n: int = 5, seed: int = 0) -> pd.DataFrame:
    """n random clips relabelled since a run froze its labels (default: the production run),
    for a second listen (A8 step 3): clip_id, path, split, label_before, label, tag, rule,
    annotator, decision_id. Only clips whose label still differs from then are drawn."""
    if since_run is None:
        since_run = store.production_run()
        if since_run is None:
            raise StoreError("no production model yet: name the run to check relabels since (--since RUN_ID)")
    since = _decision_id(store.run(since_run)["manifest_decision_id"])
    if since is None:
        raise StoreError(f"run {since_run} recorded no decision id to count relabels from")
    before = store.labels(as_of=since).set_index("clip_id")["label"]
    now = store.labels().set_index("clip_id")
    changed = now[now.label.ne(now.index.to_series().map(before)) & now.index.isin(before.index)]
    log = store.decisions(since_id=since)
    setting = log[log.new_label.notna() & ~log.undone].drop_duplicates(subset="clip_id")  # newest first
    relabelled = (setting[setting.clip_id.isin(changed.index)]
                  .assign(path=lambda f: f.clip_id.map(now["path"]), split=lambda f: f.clip_id.map(now["split"]),
                          label_before=lambda f: f.clip_id.map(before), label=lambda f: f.new_label)
                  .rename(columns={"id": "decision_id"})
                  .loc[:, ["clip_id", "path", "split", "label_before", "label", "tag", "rule", "annotator", "decision_id"]]
                  .sort_values("clip_id").reset_index(drop=True))
    if relabelled.empty:
        return relabelled
    return sample_spot_check(relabelled=relabelled, n=n, rng=np.random.default_rng(seed))
