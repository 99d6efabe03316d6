"""What the Runs tab shows of the store and the run folders: the runs table, the production line
and history, one run's title, plots, per-class metrics and metadata breakdowns, a comparison
of two runs as tables, and a detector comparison run's report. Plain values (frames, HTML,
Markdown, file paths); only reads."""
from __future__ import annotations

import functools
import hashlib
import html
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from core import train as trainer
from core.checkpoint import checkpoint_dir, checkpoint_labels, has_checkpoint
from core.comparison_child import REPORT_DIR
from core.config import ComparisonConfig
from core.detector_report import REPORT_FILES
from pipelines.detector_comparison import KIND as COMPARE_KIND
from pipelines.promotion import GATE_REPORT_FILE, GATES_DIR, production_history
from workbench import gate_panel
from workbench.context import Workbench

RUN_COLUMNS = ["run", "kind", "status", "production", "gates", "test accuracy (all clips)",
               "test accuracy (not quarantined)", "test in quarantine", "test F1 macro", "preset",
               "frozen at decision", "of run", "created (UTC)"]
CLASS_METRICS = ["precision", "recall", "f1", "average_precision", "accuracy", "support"]
DELTA_COLUMNS = ["class", "support", "baseline accuracy", "candidate accuracy", "accuracy change", "relative change",
                 "F1 change"]
FLIP_COLUMNS = ["flip", "clip", "label", "baseline predicted", "candidate predicted"]
HISTORY_COLUMNS = ["id", "run_id", "action", "actor", "reason", "created_at"]
BREAKDOWN_COLUMNS = ["metadata", "group", "clips", "accuracy", "vs all clips", "F1 macro"]
BREAKDOWN_DELTA_COLUMNS = ["metadata", "group", "clips", "baseline accuracy", "candidate accuracy", "accuracy change"]
WORST_COLUMNS = ["detector", "clip", "label", "predicted", "score", "SNR (dB)", "duration (ms)"]
REPORT_FIGURES = ("psychometric", "snr", "reliability")  # REPORT_FILES keys shown as images, in this order
# A figure line of report.md (its links are relative to the report folder, which the page cannot
# reach): the figures are shown as images instead.
FIGURE_LINE = re.compile(r"^!\[[^\]]*\]\([^)]*\)[ \t]*$", re.MULTILINE)


# --- the overview ---------------------------------------------------------------------------------
def signature(wb: Workbench) -> tuple:
    """Changes whenever a run is added or changes status, a gate report is written (after its
    run's status last changed), or production moves."""
    runs = wb.store.runs()
    gates = tuple(_gate_report_time(run_dir) for kind, run_dir in zip(runs.kind, runs.run_dir) if kind == "train")
    return (tuple(zip(runs.id, runs.status)), gates, len(wb.store.promotions()))


def _gate_report_time(run_dir: str) -> float | None:
    path = Path(run_dir) / GATES_DIR / GATE_REPORT_FILE
    return path.stat().st_mtime if path.is_file() else None


def runs_frame(wb: Workbench) -> pd.DataFrame:
    """Every run, newest first (RUN_COLUMNS): status, production mark, gate outcome, test scores."""
    runs = wb.store.runs()
    production = wb.store.production_run()
    rows = []
    for run in runs.itertuples():
        overall = overall_metrics(wb, run.id, "test")
        report = gate_panel.load_report(wb, run.id) if run.kind == "train" else None
        gates = "-" if report is None else "pass" if report["passed"] else f"fail ({len(report['gates']['failed'])})"
        rows.append([run.id, run.kind, run.status, "\u2605 production" if run.id == production else "", gates,
                     _fmt(overall.get("accuracy")), _fmt(overall.get("unquarantined_accuracy")), _quarantine_share(overall),
                     _fmt(overall.get("f1_macro")), run.preset or "-",
                     "-" if pd.isna(run.manifest_decision_id) else int(run.manifest_decision_id),
                     run.parent_run_id or "-", f"{run.created_at:%Y-%m-%d %H:%M:%S}"])
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def _quarantine_share(overall: dict[str, float]) -> str:
    """'3 (2.5%)': the split's clips in open quarantine when the run froze them."""
    if overall.get("quarantined") is None:
        return "-"
    return f"{int(overall['quarantined'])} ({overall.get('quarantined_share', 0.0):.1%})"


def production_html(wb: Workbench) -> str:
    stack = production_history(wb.store)
    if not stack:
        return "<span style='font-size:15px'>No production model yet: promote a run whose gates pass.</span>"
    before = f" (before it: run {html.escape(stack[-2])}, the rollback target)" if len(stack) > 1 else ""
    return f"<span style='font-size:15px'>Production: <b>run {html.escape(stack[-1])}</b>{before}</span>"


def history_frame(wb: Workbench) -> pd.DataFrame:
    """Every promote, override and rollback, newest first (HISTORY_COLUMNS)."""
    history = wb.store.promotions()
    if history.empty:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    shown = history.reindex(columns=HISTORY_COLUMNS)
    shown["created_at"] = shown["created_at"].map(lambda t: f"{t:%Y-%m-%d %H:%M:%S}")
    return shown.fillna("")


def compare_choices(wb: Workbench) -> list[tuple[str, str]]:
    """Training runs that finished with a checkpoint, newest first; production named as such."""
    runs = wb.store.runs(kind="train")
    production = wb.store.production_run()
    return [(f"{r.id}{' (production)' if r.id == production else ''}", r.id)
            for r in runs.itertuples() if r.status in ("succeeded", "cancelled")]


# --- one run ------------------------------------------------------------------------------------------
def title_html(run: dict[str, Any]) -> str:
    """The selected run in one line: kind, status, preset, parent, frozen decision; its error, and
    for a cancelled (unevaluated) run what to do about it."""
    facts = [f"{run['kind']} run", run["status"], f"preset {run['preset']}" if run["preset"] else None,
             f"of run {run['parent_run_id']}" if run["parent_run_id"] else None,
             f"labels frozen at decision {run['manifest_decision_id']}" if run["manifest_decision_id"] is not None else None]
    error = (f"<div style='color:#922b21;margin-top:4px'>{html.escape(str(run['error']))}</div>"
             if isinstance(run["error"], str) and run["error"] else "")
    # A cancelled run is not evaluated (its plots stay empty): its own summary says what to do.
    summary = run["summary"] or {}
    unevaluated = (f"<div style='margin-top:4px'>{html.escape(str(summary['message']))}; or resume it.</div>"
                   if summary.get("evaluated") is False and summary.get("message") else "")
    return (f"<div style='font-size:15px'><b>run {html.escape(run['id'])}</b> &middot; "
            f"{' &middot; '.join(html.escape(str(f)) for f in facts if f)}</div>{error}{unevaluated}")


def split_views(wb: Workbench, run: dict[str, Any], split: str) -> list[Any]:
    """Everything the selected run shows for one split: its three plots, per-class metrics, the
    metadata breakdown table and its chart."""
    breakdown_plot = Path(run["run_dir"]) / trainer.PLOTS_DIR / f"breakdowns_{split}.png"
    return [*_plots(run, split), _class_metrics(wb, run["id"], split), _breakdown_frame(wb, run["id"], split),
            served(breakdown_plot) if breakdown_plot.is_file() else None]


def overall_metrics(wb: Workbench, run_id: str, split: str) -> dict[str, float]:
    """The run's whole-split metrics on `split` (name -> value)."""
    metrics = wb.store.run_metrics(run_id, split=split)
    return metrics[metrics.class_label.isna()].set_index("name")["value"].to_dict()


def _class_metrics(wb: Workbench, run_id: str, split: str) -> pd.DataFrame:
    metrics = wb.store.run_metrics(run_id, split=split)
    per_class = metrics[metrics.class_label.notna() & metrics.name.isin(CLASS_METRICS)]
    if per_class.empty:
        return pd.DataFrame({"": [f"run {run_id} has no metrics for the {split} split"]})
    table = per_class.pivot_table(index="class_label", columns="name", values="value", aggfunc="first")
    table = table.reindex(columns=[c for c in CLASS_METRICS if c in table.columns]).round(4)
    return table.reset_index().rename(columns={"class_label": "class", "average_precision": "AP"})


def _breakdown_frame(wb: Workbench, run_id: str, split: str) -> pd.DataFrame:
    """Per metadata group: clips, accuracy and how far it sits from the split's accuracy."""
    rows = wb.store.run_breakdowns(run_id, split=split)
    if rows.empty:
        return pd.DataFrame({"": [f"run {run_id} has no metadata breakdowns for the {split} split (no metadata column "
                                  "splits its clips into two or more groups)"]})
    overall = overall_metrics(wb, run_id, split).get("accuracy")
    return pd.DataFrame({
        "metadata": rows.column_name, "group": rows.group_name, "clips": rows.n, "accuracy": rows.accuracy.map(_fmt),
        "vs all clips": [("-" if overall is None else _signed(a - overall)) for a in rows.accuracy],
        "F1 macro": rows.f1_macro.map(_fmt)}, columns=BREAKDOWN_COLUMNS)


def _plots(run: dict[str, Any], split: str) -> list[str | None]:
    """The run's confusion matrix and reliability diagram for this split, and its training
    curves (None where the run has no such plot: an audit has no curves)."""
    folder = Path(run["run_dir"]) / trainer.PLOTS_DIR
    paths = [folder / f"confusion_{split}.png", folder / f"reliability_{split}.png", folder / "training_curves.png"]
    return [served(path) if path.is_file() else None for path in paths]


def served(path: Path) -> str:
    """A plot as Gradio may serve it: the run folder is not one of its paths (a session holds
    checkpoints and manifests), so the PNG is copied once per version of the file into this
    server's temporary folder. Passing the file, not a decoded image, spares a decode and a
    PNG re-encode per plot each time a run is opened."""
    return _copy_once(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _copy_once(path: Path, mtime_ns: int) -> str:
    target = _copies_folder() / f"{hashlib.sha1(f'{path}:{mtime_ns}'.encode()).hexdigest()}.png"
    shutil.copyfile(path, target)
    return str(target)


@functools.cache
def _copies_folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="earmark-plots-"))


# --- a detector comparison run -------------------------------------------------------------------
def is_comparison(run: dict[str, Any]) -> bool:
    return run["kind"] == COMPARE_KIND


def speech_labels(run: dict[str, Any]) -> tuple[str, str] | None:
    """(speech, non-speech) labels to compare a run's model with the VADs: its class named speech
    in any case (SPEECH, Speech), and its class named non-speech (NONSPEECH, non_speech, ...) or
    else a two-class model's other class (else ComparisonConfig's default). None unless the run is
    a succeeded training run with a checkpoint whose model has a speech class."""
    folder = checkpoint_dir(run["run_dir"])
    if run["kind"] != "train" or run["status"] != "succeeded" or not has_checkpoint(folder):
        return None
    labels = checkpoint_labels(folder)
    speech = next((label for label in labels if label.casefold() == "speech"), None)
    if speech is None:
        return None
    others = [label for label in labels if label != speech]
    named = next((label for label in others if re.sub(r"[^a-z]", "", label.casefold()) == "nonspeech"), None)
    return speech, named or (others[0] if len(others) == 1 else ComparisonConfig().nonspeech_label)


def comparison_report_views(run: dict[str, Any] | None) -> list[Any]:
    """A comparison run's report (runs/<id>/report/) as the Selected run tab shows it: [report.md
    without its figure lines, the psychometric, balanced-accuracy-per-SNR and reliability PNGs,
    the per-duration psychometric PNGs as (path, caption), each detector's worst test clips
    (WORST_COLUMNS), an empty player]. Empty for no run; a one-line note and no figures where the
    report was not written (a running or failed comparison)."""
    empty = pd.DataFrame(columns=WORST_COLUMNS)
    if run is None:
        return ["", None, None, None, [], empty, ""]
    folder = Path(run["run_dir"]) / REPORT_DIR
    markdown = folder / REPORT_FILES["markdown"]
    if not markdown.is_file():
        return [f"No report: comparison run {run['id']} is {run['status']}.", None, None, None, [], empty, ""]
    figures = [folder / REPORT_FILES[key] for key in REPORT_FIGURES]
    per_duration = sorted(folder.glob("psychometric_*ms.png"), key=lambda path: float(path.stem.split("_")[1][:-2]))
    return [report_markdown(markdown.read_text()), *[served(path) if path.is_file() else None for path in figures],
            [(served(path), f"accuracy against SNR, {path.stem.split('_')[1][:-2]} ms clips") for path in per_duration],
            worst_clips_frame(json.loads((folder / REPORT_FILES["json"]).read_text())), ""]


def worst_clips_frame(report: dict[str, Any]) -> pd.DataFrame:
    """Each detector's worst test clips from a detector report (most confidently wrong first),
    one row per clip and detector, for a table a person selects clips from to listen."""
    rows = [[name, clip["clip_id"], clip["label"], clip["predicted"], round(float(clip["score"]), 3),
             clip.get("snr_db"), clip.get("duration_ms")]
            for name, entry in report["detectors"].items() for clip in entry.get("worst_clips", [])]
    return pd.DataFrame(rows, columns=WORST_COLUMNS)


def report_markdown(text: str) -> str:
    """report.md without its figure lines, and without its Figures section once that is empty."""
    text = FIGURE_LINE.sub("", text)
    text = re.sub(r"^## Figures\s*(?=^## |\Z)", "", text, flags=re.MULTILINE)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


# --- two runs compared ----------------------------------------------------------------------------
def comparison_views(comparison: dict[str, Any], picture: Path) -> list[Any]:
    """A comparison (pipelines.promotion.compare_runs) as the compare tab shows it: the summary,
    per-class deltas, the confusion difference picture, deltas per metadata group, the flipped
    clips, and an empty player."""
    return [_comparison_summary(comparison), _delta_frame(comparison), served(picture),
            _breakdown_delta_frame(comparison), _flip_frame(comparison), ""]


def _comparison_summary(comparison: dict[str, Any]) -> str:
    overall = comparison["overall"]
    parts = [f"{name} {v['baseline']:.4f} &rarr; {v['candidate']:.4f} ({v['delta']:+.4f})"
             for name, v in overall.items() if isinstance(v.get("baseline"), (int, float)) and isinstance(v.get("candidate"), (int, float))]
    return (f"<div style='font-size:14px'><b>{html.escape(comparison['candidate_run_id'])}</b> against "
            f"<b>{html.escape(comparison['baseline_run_id'])}</b> on {comparison['n_clips']} {html.escape(comparison['split'])} clips: "
            f"{'; '.join(parts)}. Fixed {len(comparison['fixed'])} clip(s), broke {len(comparison['broken'])}.</div>")


def _delta_frame(comparison: dict[str, Any]) -> pd.DataFrame:
    rows = [[label, per["support"], _fmt(per["baseline_accuracy"]), _fmt(per["candidate_accuracy"]),
             _signed(per["accuracy_delta"]), _percent(per["accuracy_relative_change"]), _signed(per["f1_delta"])]
            for label, per in comparison["per_class"].items()]
    return pd.DataFrame(rows, columns=DELTA_COLUMNS)


def _breakdown_delta_frame(comparison: dict[str, Any]) -> pd.DataFrame:
    rows = [[column, group, g["n"], _fmt(g["baseline_accuracy"]), _fmt(g["candidate_accuracy"]), _signed(g["accuracy_delta"])]
            for column, groups in comparison["breakdowns"].items() for group, g in groups.items()]
    if not rows:
        return pd.DataFrame({"": ["no metadata column splits the compared clips into two or more groups"]})
    return pd.DataFrame(rows, columns=BREAKDOWN_DELTA_COLUMNS)


def _flip_frame(comparison: dict[str, Any]) -> pd.DataFrame:
    rows = [[kind, c["clip_id"], c["label"], c["baseline"], c["candidate"]]
            for kind, clips in (("broken", comparison["broken"]), ("fixed", comparison["fixed"])) for c in clips]
    return pd.DataFrame(rows, columns=FLIP_COLUMNS)


def _fmt(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else f"{float(value):.4f}"


def _signed(value: Any) -> str:
    return "-" if value is None else f"{float(value):+.4f}"


def _percent(value: Any) -> str:
    return "-" if value is None else f"{float(value):+.1%}"
