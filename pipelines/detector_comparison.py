"""Speech detectors side by side (B5, B9): trained runs beside WebRTC VAD and Silero VAD on the
same frozen clips, with plan B9's report.

The writer freezes the session's original val and test clips of the two classes (quarantined
ones included: a compared number counts every clip of the split) into a new run of kind
"compare", the child (core/comparison_child.py) scores them with every detector and writes the
report (runs/<id>/report/: report.json, report.md, PNGs), and the writer ingests its headline
numbers as metrics rows (split "test", or "val" for the threshold; class_label = the detector)
and a summary on the run. Each detector's threshold is chosen on val and kept with the run
(summary "thresholds"): the promotion gate `beat_vads_at_snr_db` reuses it, never refits it on test.

    outcome = compare_detectors(store, runs=["20261201-...-train-ab12"], objective="youden")
    print("\n".join(outcome.lines()))
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from core.checkpoint import checkpoint_dir, checkpoint_labels, has_checkpoint
from core.comparison_child import REPORT_DIR, SCORES_FILE, ComparisonJob, clip_facts
from core.config import ComparisonConfig, ConfigError
from core.detector_report import REPORT_FILES, balanced_accuracy_at_snr
from core.detectors import available_detectors
from core.run_folder import MANIFEST_FILE
from core.store import Store, StoreError
from pipelines.child_process import run_child
from pipelines.finetune import freeze_manifest, new_run_id

KIND = "compare"
DEV_SPLIT, TEST_SPLIT = "val", "test"
TRAINED_DETECTOR = "trained-run"


def trained_name(run_id: str) -> str:
    """A trained run's name in the report, as core.detectors.TrainedRunDetector names it."""
    return f"run:{run_id}"


@dataclasses.dataclass
class ComparisonOutcome:
    run_id: str
    run_dir: Path
    status: str
    settings: ComparisonConfig
    runs: list[str]
    error: str | None = None
    not_compared: dict[str, str] = dataclasses.field(default_factory=dict)  # detector -> why it was not built
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def report_files(self) -> dict[str, Path]:
        """The report's files that exist, by REPORT_FILES key."""
        folder = self.run_dir / REPORT_DIR
        return {key: folder / name for key, name in REPORT_FILES.items() if (folder / name).is_file()}

    def lines(self) -> list[str]:
        if self.status != "succeeded":
            return [f"comparison {self.run_id} {self.status}: {self.error}"]
        lines = [self.summary["message"],
                 f"  {'detector':<40} {'threshold':>9} {'accuracy':>9} {'bal. acc':>9} {'ECE':>7} {'DT50 dB':>8}"]
        for name, row in self.summary["detectors"].items():
            lines.append(f"  {name:<40} {_cell(row['threshold'], '.3f'):>9} {_cell(row['accuracy'], '.1%'):>9} "
                         f"{_cell(row['balanced_accuracy'], '.1%'):>9} {_cell(row['ece'], '.1%'):>7} "
                         f"{_snr_cell(row['dt50_db'], self.summary.get('snr_levels_db')):>8}")
        lines += [f"  {name}: not compared: {error}" for name, error in self.not_compared.items()]
        lines.append(f"  report: {self.run_dir / REPORT_DIR / REPORT_FILES['markdown']}")
        return lines


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _snr_cell(value: float | None, levels: list[float] | None) -> str:
    """A DT50 in dB; beyond the tested SNRs it is an extrapolation and reads "> 20" or "< -5"."""
    if value is None or not levels:
        return _cell(value, ".1f")
    return f"< {min(levels):g}" if value < min(levels) else f"> {max(levels):g}" if value > max(levels) else f"{value:.1f}"


def compare_detectors(store: Store, *, runs: Sequence[str], settings: ComparisonConfig | None = None,
                      progress: bool = True, on_event: Callable[[dict[str, Any]], None] | None = None,
                      **options: Any) -> ComparisonOutcome:
    """Compare the trained runs with the baseline detectors on the session's val and test clips.

    options: ComparisonConfig fields to change on settings (detectors=[...], objective="youden",
    ...; None keeps the default), validated there: a bad one raises ConfigError naming it. A run
    that is not a succeeded training run with a checkpoint, a model without the speech class, or
    a session without val and test clips of both classes is refused (StoreError, one line) and
    no run is created."""
    options = {name: value for name, value in options.items() if value is not None}
    settings = ComparisonConfig.from_dict({**(settings or ComparisonConfig()).to_dict(), **options}, prefix="comparison.")
    job, run_dir = _prepare(store, runs=_checked_runs(store, runs, settings), settings=settings)
    outcome = ComparisonOutcome(run_id=job.run_id, run_dir=run_dir, status="running", settings=settings,
                                runs=list(dict.fromkeys(runs)))
    store.set_run_status(job.run_id, "running")
    try:
        result = run_child(run_dir, module="core.comparison_child", desc="compare detectors", progress=progress,
                           on_event=on_event)
        outcome.status, outcome.error = result["status"], result.get("error")
        outcome.not_compared = result.get("errors", {})
        if outcome.status == "succeeded":
            report = json.loads((run_dir / REPORT_DIR / REPORT_FILES["json"]).read_text())
            outcome.not_compared.update({name: entry["error"] for name, entry in report["detectors"].items()
                                         if "error" in entry})
            outcome.summary = _summary(outcome, report)
            store.ingest_run_results(job.run_id, metrics=metric_rows(report))
    except Exception as exc:
        store.set_run_status(job.run_id, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    store.set_run_status(job.run_id, outcome.status, error=outcome.error, summary=outcome.summary or None)
    return outcome


def _checked_runs(store: Store, runs: Sequence[str], settings: ComparisonConfig) -> dict[str, Path]:
    """run id -> run folder of each requested run, refusing (one line) what cannot be compared."""
    if isinstance(runs, str) or not runs:
        raise ConfigError(f"runs: {runs!r} must list at least one trained run id")
    baselines = [name for name in available_detectors() if name != TRAINED_DETECTOR]
    unknown = [name for name in settings.detectors if name not in baselines]
    if unknown:
        raise ConfigError(f"comparison.detectors: {unknown[0]!r} is not a baseline detector; allowed: {', '.join(baselines)}")
    folders = {}
    for run_id in dict.fromkeys(runs):
        run = store.run(run_id)
        if run["kind"] != "train" or run["status"] != "succeeded":
            raise StoreError(f"run {run_id} is a {run['status']} {run['kind']} run; only a succeeded training run "
                             "with a checkpoint can be compared")
        folder = checkpoint_dir(run["run_dir"])
        if not has_checkpoint(folder):
            raise StoreError(f"run {run_id} has no checkpoint (none complete in {folder})")
        labels = checkpoint_labels(folder)
        if settings.speech_label not in labels:
            raise StoreError(f"run {run_id}'s model has no {settings.speech_label} class (its classes: "
                             f"{', '.join(labels)}); name the speech class with --speech-label")
        folders[run_id] = Path(run["run_dir"])
    return folders


def _prepare(store: Store, *, runs: dict[str, Path], settings: ComparisonConfig) -> tuple[ComparisonJob, Path]:
    """Freeze the original val and test clips of the two classes into a new run folder and
    register the run (parent: the first trained run)."""
    manifest, as_of = freeze_manifest(store, quarantined_in=(DEV_SPLIT, TEST_SPLIT))
    labels = (settings.speech_label, settings.nonspeech_label)
    manifest = manifest[manifest.parent_clip_id.isna() & manifest.split.isin([DEV_SPLIT, TEST_SPLIT])
                        & manifest.label.isin(labels)].reset_index(drop=True)
    for split in (DEV_SPLIT, TEST_SPLIT):
        missing = [label for label in labels if not ((manifest.split == split) & (manifest.label == label)).any()]
        if missing:
            raise StoreError(f"no usable {split} clips labelled {' or '.join(missing)} in this session: thresholds are "
                             f"chosen on {DEV_SPLIT} and judged on {TEST_SPLIT}, both need {labels[0]} and {labels[1]} clips")
    run_id = new_run_id(KIND)
    run_dir = Path(store.session_dir) / "runs" / run_id
    run_dir.mkdir(parents=True)
    manifest.to_parquet(run_dir / MANIFEST_FILE)
    detectors = [{"name": trained_name(run), "detector": TRAINED_DETECTOR,
                  "options": {"run_dir": str(folder), "speech_label": settings.speech_label}} for run, folder in runs.items()]
    detectors += [{"name": name, "detector": name, "options": {}} for name in settings.detectors]
    job = ComparisonJob(run_id=run_id, detectors=detectors, settings=settings.to_dict())
    job.save(run_dir)
    store.create_run(run_id, kind=KIND, preset=None, config={"comparison": settings.to_dict(), "runs": list(runs)},
                     parent_run_id=next(iter(runs)), manifest_decision_id=as_of, run_dir=run_dir)
    return job, run_dir


def metric_rows(report: dict[str, Any]) -> pd.DataFrame:
    """The report's headline numbers as metrics rows: split, name, class_label (the detector),
    value. On val: the threshold and the objective's value there; on test: accuracy, balanced
    accuracy, each class's accuracy (accuracy_<label>), ece, mce, the test-optimal threshold,
    the gap, dt50_db and dt75_db. Undefined numbers are left out."""
    rows = []
    for name, entry in report["detectors"].items():
        if "error" in entry:
            continue
        test, threshold, curve = entry["test"], entry["threshold"], entry["psychometric"]["overall"]
        values = {("val", "threshold"): threshold["dev"], ("val", threshold["objective"]): threshold["dev_value"],
                  ("test", "accuracy"): test["accuracy"], ("test", "balanced_accuracy"): test["balanced_accuracy"],
                  **{("test", f"accuracy_{label}"): value for label, value in test["per_class"].items()},
                  ("test", "ece"): test["calibration"]["ece"], ("test", "mce"): test["calibration"]["mce"],
                  ("test", "optimal_threshold"): threshold["test_optimal"], ("test", "threshold_gap"): threshold["gap"],
                  ("test", "dt50_db"): curve.get("dt50"), ("test", "dt75_db"): curve.get("dt75")}
        rows += [{"split": split, "name": metric, "class_label": name, "value": float(value)}
                 for (split, metric), value in values.items() if value is not None]
    return pd.DataFrame(rows, columns=["split", "name", "class_label", "value"])


def _summary(outcome: ComparisonOutcome, report: dict[str, Any]) -> dict[str, Any]:
    """The run's summary: each compared detector's dev threshold (kept for the gates) and headline numbers."""
    detectors = {}
    for name, entry in report["detectors"].items():
        if "error" not in entry:
            test, curve = entry["test"], entry["psychometric"]["overall"]
            detectors[name] = {"threshold": entry["threshold"]["dev"], "test_optimal_threshold": entry["threshold"]["test_optimal"],
                               "accuracy": test["accuracy"], "balanced_accuracy": test["balanced_accuracy"],
                               "ece": test["calibration"]["ece"], "dt50_db": curve.get("dt50"), "dt75_db": curve.get("dt75"),
                               "latency_p50_ms": entry["latency_ms"]["total"]["p50"]}
    clips = report["clips"]
    return {"runs": outcome.runs, "objective": report["objective"], "snr_levels_db": report["snr_levels"],
            "thresholds": {name: row["threshold"] for name, row in detectors.items()}, "detectors": detectors,
            "not_compared": outcome.not_compared, "clips": clips, "report_dir": REPORT_DIR,
            "message": f"comparison {outcome.run_id}: {len(detectors)} detectors on {clips['test']} test clips, each at "
                       f"the threshold that maximises {report['objective']} on {clips['dev']} val clips"}


# --- what the promotion gate reads ------------------------------------------------------------

def latest_comparison(store: Store, *, run_id: str) -> str | None:
    """The newest succeeded comparison run that scored run_id's model, or None."""
    for row in store.runs(kind=KIND).itertuples():
        summary = json.loads(row.summary) if isinstance(row.summary, str) else {}
        if row.status == "succeeded" and trained_name(run_id) in summary.get("thresholds", {}):
            return row.id
    return None


def vad_baselines(store: Store, *, run_id: str, max_snr_db: float,
                  labels: Mapping[int, str] | None = None) -> dict[str, Any] | None:
    """What GatePolicy.beat_vads_at_snr_db judges, from the latest comparison that scored run_id:
    balanced accuracies on its test clips at SNR <= max_snr_db (dB), each detector at the
    threshold that comparison chose on val: {max_snr_db, split, clips, candidate, detectors:
    {VAD: value}, comparison_run_id}. None when no comparison scored the run. labels (clip id ->
    label) judges by other labels than the frozen ones, e.g. a benchmark's answer key; clips it
    gives neither class are left out."""
    comparison = latest_comparison(store, run_id=run_id)
    if comparison is None:
        return None
    run = store.run(comparison)
    settings = ComparisonConfig.from_dict(run["config"]["comparison"])
    thresholds = run["summary"]["thresholds"]
    candidate = trained_name(run_id)
    chosen = {name: value for name, value in thresholds.items() if name == candidate or not name.startswith(trained_name(""))}
    folder = Path(run["run_dir"])
    clips = clip_facts(pd.read_parquet(folder / MANIFEST_FILE))
    if labels is not None:
        clips = clips.assign(label=clips.clip_id.map(labels))
        clips = clips[clips.label.isin([settings.speech_label, settings.nonspeech_label])]
    measured = balanced_accuracy_at_snr(
        scores=pd.read_parquet(folder / SCORES_FILE), clips=clips,
        thresholds=chosen, max_snr_db=max_snr_db, speech_label=settings.speech_label,
        nonspeech_label=settings.nonspeech_label, split=TEST_SPLIT)
    values = measured.pop("detectors")
    own = values.pop(candidate)
    # A VAD that scored none of the clips there has no number to beat; with no clips at all the gate is n/a.
    vads = {name: value for name, value in values.items() if value is not None or not measured["clips"]}
    return {**measured, "candidate": own, "detectors": vads, "comparison_run_id": comparison}
