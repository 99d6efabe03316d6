"""The Runs tab's handlers: plain values in, the outputs' new values out; a refusal raises.

The only writes are promotion decisions and detector comparisons (pipelines/promotion.py,
pipelines/detector_comparison.py, in this server process, the session's writer) and jobs handed
to the queue (an audit of a run, the resume of a cancelled or crashed run or study, and a
study's chosen trial sent through the audit and the gates). A study shows its results in place
of a run's split views, and its gate panel is that of the trial chosen for promotion. Lists
skip the gate panel's outputs (panel_size of them) where the panel is left as it is.
"""
from __future__ import annotations

import html
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from core import train as trainer
from core.checkpoint import checkpoint_dir, has_checkpoint
from core.config import ComparisonConfig
from core.store import StoreError
from pipelines.detector_comparison import compare_detectors
from pipelines.finetune import RESUMABLE
from pipelines.promotion import check_reason, compare_runs, rollback, rollback_plan
from pipelines.study_report import RESULTS_FILES
from workbench import gate_panel, llm_views, study_views
from workbench.common import message_html, queue_place
from workbench.context import Workbench, require_annotator
from workbench.gate_panel import SPOT_CHECK_FMAX_HZ
from workbench.job_queue import RESUMABLE_STUDY
from workbench.runs_views import (comparison_report_views, comparison_views, compare_choices, history_frame,
                                  is_comparison, production_html, runs_frame, served, signature, speech_labels,
                                  split_views, title_html)

# (done, total) -> the progress bar; total is None until the child has counted the clips.
Report = Callable[[int, "int | None"], None]
RESUME_RUN = "Resume this run from its last finished epoch (a queued job)"
EXPORT_RUN = "Prepare downloads: report (JSON), predictions (CSV), checkpoint (zip)"
EXPORT_STUDY = "Prepare downloads: the study's report (JSON, CSV, Markdown), its trials (CSV) and its plot"


# --- the overview: table, production line, history, compare choices --------------------------------
def overview(wb: Workbench, seen: Any, base: str | None, cand: str | None, *, force: bool = False) -> list[Any]:
    """[signature, production line, runs table, history, baseline, candidate]; all skipped when
    the store's signature is still `seen` (unless forced). The compared runs stay as chosen while
    they exist; the baseline falls back to production, the candidate to none."""
    now = signature(wb)
    if now == seen and not force:
        return [gr.skip()] * 6
    choices = compare_choices(wb)
    ids = {run_id for _, run_id in choices}
    return [now, production_html(wb), runs_frame(wb), history_frame(wb),
            gr.Dropdown(choices=choices, value=base if base in ids else wb.store.production_run()),
            gr.Dropdown(choices=choices, value=cand if cand in ids else None)]


def tick(wb: Workbench, seen: Any, base: str | None, cand: str | None, run_id: str | None) -> list[Any]:
    """The timer: overview when the store moved, and with it the selected run's title and Resume
    button (a resumed run that starts hides it; one cancelled again shows it)."""
    views = overview(wb, seen, base, cand)
    if run_id is None or not isinstance(views[0], tuple):  # nothing selected, or nothing moved (skipped)
        return [*views, gr.skip(), gr.skip()]
    run = wb.store.run(run_id)
    return [*views, title_html(run), resume_button(wb, run)]


def study_tick(wb: Workbench, seen: Any, run_id: str | None, sort_by: str | None, target: str | None) -> Any:
    """The timer, for a selected study: as its trials finish (or an audit of its chosen trial
    ends) its views and the chosen trial's gate panel follow; one skip of every output when
    nothing moved or no study is selected. seen: the store's signature this timer last drew
    (its own: the overview's timer updates another one on the same tick, in no set order);
    returned first, then the views."""
    now = signature(wb)
    if run_id is None or now == seen or not study_views.is_study(wb.store.run(run_id)):
        return gr.skip()
    return [now, *study_panel(wb, run_id, sort_by, target)]


def tab_shown(wb: Workbench, seen: Any, base: str | None, cand: str | None, run_id: str | None, *,
              panel_size: int) -> list[Any]:
    """When the tab is shown: overview if the store moved (a job ended, a promotion in the Train
    tab), and the selected run's title, Resume button and gate panel, whose production mark and
    buttons follow. With nothing selected (the page load may be opening production) the panel is left be."""
    if run_id is None:
        return [*overview(wb, seen, base, cand), gr.skip(), gr.skip(), *[gr.skip()] * panel_size]
    run = wb.store.run(run_id)
    return [*overview(wb, seen, base, cand), title_html(run), resume_button(wb, run),
            *gate_panel.render(wb, panel_run(wb, run))]


# --- one run ------------------------------------------------------------------------------------
def open_run(wb: Workbench, run_id: str, split_name: str, *, as_candidate: bool = True, message: str = "") -> list[Any]:
    """[selected, title, *split views, downloads (emptied), message, compare candidate, Resume
    button, *gate panel] for a run; a training run becomes the compare tab's candidate. The
    detector comparison's button and report follow the selection (report_view)."""
    run = wb.store.run(run_id)
    trained = run["kind"] == "train"
    return [run_id, title_html(run), *split_views(wb, run, split_name), gr.File(value=None, visible=False), message,
            gr.Dropdown(value=run_id) if trained and as_candidate else gr.skip(), resume_button(wb, run),
            *gate_panel.render(wb, panel_run(wb, run))]


def panel_run(wb: Workbench, run: dict[str, Any], target: str | None = None) -> str | None:
    """The run whose gate panel shows beside the selected one: a training run's own; a study's
    trial chosen for promotion (target while it is one of them, else its best); none otherwise."""
    if run["kind"] == "train":
        return run["id"]
    if not study_views.is_study(run):
        return None
    choices = [run_id for _, run_id in study_views.promotable(study_views.load(run))]
    return target if target in choices else (choices[0] if choices else None)


def first_view(wb: Workbench, split_name: str) -> Any:
    """On page load: the production run opened (plots, tables and gates filled, not empty boxes),
    the compare tab keeping production as its baseline with no candidate yet; without production,
    one skip of every output."""
    production = wb.store.production_run()
    return gr.skip() if production is None else open_run(wb, production, split_name, as_candidate=False)


def change_split(wb: Workbench, run_id: str | None, split_name: str) -> Any:
    """The selected run's split views on another split (one skip with nothing selected)."""
    return split_views(wb, wb.store.run(run_id), split_name) if run_id else gr.skip()


def resume_button(wb: Workbench, run: dict[str, Any]) -> gr.Button:
    """Resume is offered for a cancelled or crashed (failed) training run that saved a resume
    point (finished an epoch) and has no unfinished job in the queue (one queued or resuming
    already): a button that could only be refused is not shown."""
    if study_views.is_study(run):
        return _study_resume_button(wb, run)
    offered = (wb.jobs is not None and run["kind"] == "train" and run["status"] in RESUMABLE
               and trainer.saved_progress(run["run_dir"]) is not None
               and not any(job.run_id == run["id"] and not job.finished for job in wb.jobs.jobs()))
    return gr.Button(visible=offered, value=RESUME_RUN)


def _study_resume_button(wb: Workbench, run: dict[str, Any]) -> gr.Button:
    """A cancelled or interrupted study with trials left, and no unfinished job, resumes."""
    left = sum(t.status != "succeeded" for t in study_views.load(run).trials)
    offered = (wb.jobs is not None and run["status"] in RESUMABLE_STUDY and left > 0
               and not any(job.run_id == run["id"] and not job.finished for job in wb.jobs.jobs()))
    return gr.Button(visible=offered, value=f"Resume this study: train its {left} unfinished trial(s); finished trials "
                                            "stay (a queued job)")


def report_view(wb: Workbench, run_id: str | None) -> list[Any]:
    """[Compare detectors button, the split views' column, the comparison report's column, *its
    views (runs_views.comparison_report_views)] for the selected run: a comparison run shows its
    report in place of the split views (it has no plots or per-class metrics of its own); the
    button is offered for a succeeded training run whose model has a speech class."""
    run = wb.store.run(run_id) if run_id else None
    shown = run is not None and is_comparison(run)
    offered = run is not None and speech_labels(run) is not None
    # a prompt search and a study have no plots of a run's either
    plotted = not shown and not llm_views.is_prompt_search(run) and not study_views.is_study(run)
    return [gr.Button(visible=offered), gr.Column(visible=plotted), gr.Column(visible=shown),
            *comparison_report_views(run if shown else None)]


def llm_view(wb: Workbench, run_id: str | None, split_name: str) -> list[Any]:
    """[the audio-LLM column, its Markdown, the per-clip predictions, an empty player] for the
    selected run: a prompt search shows its best prompt and ranked table; an audio-LLM training
    run its answer card and, on the split, each clip's prediction with its A/B probability of
    speech; any other run hides the column."""
    run = wb.store.run(run_id) if run_id else None
    hidden = gr.Dataframe(visible=False)
    if llm_views.is_prompt_search(run):
        return [gr.Column(visible=True), llm_views.prompt_search_markdown(run), hidden, ""]
    found = llm_views.answer_card(run)
    if found is None:
        return [gr.Column(visible=False), "", hidden, ""]
    card, labels = found
    frame = llm_views.llm_predictions_frame(wb.store, run_id, split_name, card, labels)
    return [gr.Column(visible=True), llm_views.answer_card_markdown(card),
            gr.Dataframe(frame, visible=True, label=f"each {split_name} clip's prediction with the A/B probability of "
                                                    f"speech, most confidently wrong first (select one to listen)"), ""]


def play_llm_clip(wb: Workbench, run_id: str | None, row: list[Any]) -> str:
    """A row of an audio-LLM run's predictions (clip, label, predicted, p(speech), at the
    threshold) as a captioned player."""
    clip_id, label, predicted, p_speech = row[:4]
    view = wb.views.get(int(clip_id), run_id=run_id, fmax_hz=SPOT_CHECK_FMAX_HZ)
    caption = (f"clip {clip_id}: label {html.escape(str(label))}; the model says {html.escape(str(predicted))}, "
               f"p(speech) {float(p_speech):.3f} from its A/B letters")
    return f"<div style='margin-bottom:4px'>{caption}</div>{view.html}"


# --- a study -------------------------------------------------------------------------------------
def study_view(wb: Workbench, run_id: str | None, sort_by: str | None = None, target: str | None = None) -> list[Any]:
    """[the study column, its Markdown, Sort by, results, plot, trials, the trial to promote,
    Promote through the gates, Audit, Evaluate gates, split, Prepare downloads] for the selected run: a study shows
    its views (sorted by sort_by, default its own metric on val) and hides what makes no sense
    for it (auditing or gating the study itself, a split); any other run hides the study column."""
    run = wb.store.run(run_id) if run_id else None
    if not study_views.is_study(run):
        return [gr.Column(visible=False), "", gr.skip(), gr.skip(), None, gr.skip(), gr.Dropdown(choices=[], value=None),
                gr.Button(visible=False), gr.Button(visible=True), gr.Button(visible=True), gr.Dropdown(visible=True),
                gr.Button(value=EXPORT_RUN)]
    study = study_views.load(run)
    grid = study.study == "grid"
    sort_by = sort_by if grid and sort_by else f"val_{study.metric}"
    plot = study_views.plot_path(study)
    choices = study_views.promotable(study)
    chosen = panel_run(wb, run, target)
    return [gr.Column(visible=True), study_views.headline_markdown(run, study),
            gr.Dropdown(choices=study_views.sort_choices(), value=sort_by, visible=grid),
            study_views.results_frame(study, sort_by), served(plot) if plot else None, study_views.trials_table(study),
            gr.Dropdown(choices=choices, value=chosen, visible=grid), gr.Button(visible=grid, interactive=bool(choices)),
            gr.Button(visible=False), gr.Button(visible=False), gr.Dropdown(visible=False), gr.Button(value=EXPORT_STUDY)]


def study_panel(wb: Workbench, run_id: str, sort_by: str | None, target: str | None) -> list[Any]:
    """study_view and the gate panel of the study's chosen trial."""
    return [*study_view(wb, run_id, sort_by, target), *gate_panel.render(wb, panel_run(wb, wb.store.run(run_id), target))]


def resort_study(wb: Workbench, run_id: str | None, sort_by: str) -> Any:
    """The selected grid's results table sorted by another metric (one skip for anything else)."""
    run = wb.store.run(run_id) if run_id else None
    if not study_views.is_study(run) or not sort_by:
        return gr.skip()
    return study_views.results_frame(study_views.load(run), sort_by)


def promote_through_gates(wb: Workbench, request: gr.Request | None, name: str | None, study_id: str | None,
                          target: str | None) -> str:
    """Send the study's chosen trial (by default its best config's best seed) through the path
    every run takes to production: an audit, then its gates (a queued job). The gate panel below
    shows the verdict when it ends; Promote is enabled only if every gate passes."""
    run = wb.store.run(study_id) if study_id else None
    if not study_views.is_study(run):
        raise ValueError("Select a study in the table first.")
    if wb.jobs is None:
        raise ValueError("this workbench runs no jobs")
    choices = dict((run_id, shown) for shown, run_id in study_views.promotable(study_views.load(run)))
    if target not in choices:
        raise ValueError(f"Study {study_id} has no succeeded trial {target!r} to promote; choose one of its trials.")
    job = wb.jobs.submit_audit(run_id=target, submitted_by=require_annotator(name, request))
    return message_html(f"{choices[target].split(':')[0]} (run {target}) {_when(wb, job.run_id)}: an audit, then its "
                        "gates; the verdict shows below when it ends (progress in the Train tab), and Promote is "
                        "enabled only if every gate passes.")


def compare_speech_detectors(wb: Workbench, request: gr.Request | None, name: str | None, run_id: str | None,
                             split_name: str, *, report: Report | None = None,
                             settings: ComparisonConfig | None = None) -> list[Any]:
    """Compare the selected run's model with the VADs (pipelines.detector_comparison, a child
    job of tens of seconds, here in the server process); report(done, total) follows the child's
    progress. Returns open_run of the comparison run with the outcome's first line as the message
    (report_view then shows its report). A missing name, a run that is not a succeeded training
    run or a model without a speech class is refused in one line, the selected run left open."""
    if not run_id:
        raise ValueError("Select a training run in the table first.")

    def on_event(event: dict[str, Any]) -> None:
        if report is not None and event["type"] in ("start", "progress"):
            report(int(event.get("done", 0)), event.get("clips", event.get("total")))

    try:
        require_annotator(name, request)
        run = wb.store.run(run_id)
        labels = speech_labels(run)
        if run["kind"] != "train" or run["status"] != "succeeded":
            raise StoreError(f"run {run_id} is a {run['status']} {run['kind']} run; only a succeeded training run "
                             "can be compared with the VADs")
        if not has_checkpoint(checkpoint_dir(run["run_dir"])):
            raise StoreError(f"run {run_id} has no checkpoint to compare")
        if labels is None:
            raise StoreError(f"run {run_id}'s model has no speech class (a label named speech, in any case)")
        outcome = compare_detectors(wb.store, runs=[run_id], settings=settings, progress=False, on_event=on_event,
                                    speech_label=labels[0], nonspeech_label=labels[1])
    except (ValueError, StoreError) as exc:
        return open_run(wb, run_id, split_name, as_candidate=False,
                        message=message_html(f"Detectors not compared: {exc}", error=True))
    failed = outcome.status != "succeeded"
    line = outcome.lines()[0] if failed else f"{outcome.summary['message']}; its report is below"
    return open_run(wb, outcome.run_id, split_name, as_candidate=False, message=message_html(line, error=failed))


def evaluate_gates(wb: Workbench, run_id: str | None) -> list[Any]:
    """The gate panel after evaluating the selected training run's gates on its latest audit."""
    if not run_id:
        raise ValueError("Select a training run in the table first.")
    if wb.store.run(run_id)["kind"] != "train":
        raise ValueError(f"Run {run_id} is an audit; gates are evaluated for training runs (select the run it audited).")
    return gate_panel.evaluate(wb, run_id)


def queue_audit(wb: Workbench, request: gr.Request | None, name: str | None, run_id: str | None) -> str:
    """Queue an audit-then-gates job of the selected run, signed; the message says where it waits."""
    if not run_id:
        raise ValueError("Select a training run in the table first.")
    job = wb.jobs.submit_audit(run_id=run_id, submitted_by=require_annotator(name, request))
    return message_html(f"audit of run {run_id} {_when(wb, job.run_id)}: its progress shows in the Train tab; when it "
                        "ends, the runs table shows its gates (select the run again for the report).")


def queue_resume(wb: Workbench, request: gr.Request | None, name: str | None, run_id: str | None) -> list[Any]:
    """Queue the selected cancelled or crashed run to continue from its last finished epoch (then
    its audit and gates): [message, Resume hidden]; a run that cannot resume is refused in one line."""
    if not run_id:
        raise ValueError("Select a cancelled or failed training run in the table first.")
    if wb.jobs is None:
        raise ValueError("this workbench runs no jobs")
    who = require_annotator(name, request)
    if study_views.is_study(wb.store.run(run_id)):
        job = wb.jobs.submit_study_resume(run_id, submitted_by=who)
        what = (f"resume of study {html.escape(run_id)} {_when(wb, job.run_id)}: {job.trials_done} of "
                f"{job.trials_total} trials are done and stay, a stopped trial continues from its last finished epoch")
    else:
        job = wb.jobs.submit_resume(run_id, submitted_by=who)
        what = f"resume of run {html.escape(run_id)} {_when(wb, job.run_id)}: it continues from its last finished epoch"
    note = (f'<span class="em-message-ok">{what}; its progress shows in the <a href="#" class="em-open-tab" '
            f'data-tab="Train">Train tab</a>.</span>')
    return [note, gr.Button(visible=False)]


def _when(wb: Workbench, run_id: str) -> str:
    place = queue_place(wb.jobs, run_id)
    return f"queued #{place}" if place else "started"


def prepare_downloads(wb: Workbench, run_id: str | None) -> gr.File:
    """The run's report (JSON), predictions (CSV) and, when it has one, checkpoint (zip), written
    to a fresh temporary folder (Gradio serves downloads from there, never from the session)."""
    if not run_id:
        raise ValueError("Select a run in the table first.")
    run = wb.store.run(run_id)
    if study_views.is_study(run):
        return _study_downloads(run)
    predictions = wb.store.predictions(run_id)
    if predictions.empty:
        raise StoreError(f"run {run_id} has no predictions to download (status {run['status']})")
    target = Path(tempfile.mkdtemp(prefix=f"earmark-{run_id}-"))
    report = {"run": run, "metrics": wb.store.run_metrics(run_id).to_dict(orient="records"),
              "breakdowns": wb.store.run_breakdowns(run_id).to_dict(orient="records"),
              "gate_report": gate_panel.load_report(wb, run_id) if run["kind"] == "train" else None,
              "promotions": history_frame(wb).query("run_id == @run_id").to_dict(orient="records")}
    paths = [target / f"{run_id}-report.json", target / f"{run_id}-predictions.csv"]
    paths[0].write_text(json.dumps(_plain(report), indent=2))
    predictions.assign(probs=predictions.probs.map(lambda p: json.dumps([round(float(x), 6) for x in p]))).to_csv(
        paths[1], index=False)
    checkpoint = checkpoint_dir(run["run_dir"])
    if checkpoint.is_dir():
        paths.append(Path(shutil.make_archive(str(target / f"{run_id}-checkpoint"), "zip", checkpoint)))
    return gr.File(value=[str(p) for p in paths], visible=True)


def _study_downloads(run: dict[str, Any]) -> gr.File:
    """A study's report files (results JSON, CSV and Markdown, the trials CSV, the plot)."""
    folder = Path(run["run_dir"])
    found = [folder / name for name in RESULTS_FILES.values() if (folder / name).is_file()]
    if not found:
        raise StoreError(f"study {run['id']} has no report yet: it is written when the study ends or stops")
    target = Path(tempfile.mkdtemp(prefix=f"earmark-{run['id']}-"))
    paths = [shutil.copyfile(path, target / f"{run['id']}-{path.name}") for path in found]
    return gr.File(value=[str(p) for p in paths], visible=True)


def _plain(value: Any) -> Any:
    """JSON-ready: missing values (NaN, NaT, None) become null, times and numpy scalars plain."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or (not isinstance(value, str) and pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value.item() if hasattr(value, "item") else value


# --- two runs compared, and production --------------------------------------------------------------
def compare(wb: Workbench, base: str | None, cand: str | None, split_name: str) -> list[Any]:
    """runs_views.comparison_views of two different runs on a split."""
    if not base or not cand:
        raise ValueError("Choose a baseline and a candidate run to compare.")
    if base == cand:
        raise ValueError("Choose two different runs to compare.")
    comparison, paths = compare_runs(wb.store, baseline=base, candidate=cand, split=split_name)
    return comparison_views(comparison, Path(paths["png"]))


def play_flip(wb: Workbench, cand: str | None, row: list[Any]) -> str:
    """A row of the flipped clips (flip, clip, label, baseline said, candidate says) as a captioned player."""
    _, clip_id, label, before, now = row
    view = wb.views.get(int(clip_id), run_id=cand, fmax_hz=SPOT_CHECK_FMAX_HZ)
    caption = (f"clip {clip_id}: label {html.escape(str(label))}; baseline said {html.escape(str(before))}, "
               f"candidate says {html.escape(str(now))}")
    return f"<div style='margin-bottom:4px'>{caption}</div>{view.html}"


def play_worst_clip(wb: Workbench, row: list[Any]) -> str:
    """A row of a comparison's worst clips (runs_views.WORST_COLUMNS) as a captioned player."""
    detector, clip_id, label, predicted, score, snr_db, duration_ms = row
    view = wb.views.get(int(clip_id), fmax_hz=SPOT_CHECK_FMAX_HZ)
    facts = ", ".join(f"{float(value):g} {unit}" for value, unit in ((snr_db, "dB"), (duration_ms, "ms"))
                      if pd.notna(value))
    where = f" ({facts})" if facts else ""
    caption = (f"clip {clip_id}{where}: label {html.escape(str(label))}; {html.escape(str(detector))} says "
               f"{html.escape(str(predicted))} (score {float(score):.3f})")
    return f"<div style='margin-bottom:4px'>{caption}</div>{view.html}"


def ask_rollback(wb: Workbench, request: gr.Request | None, name: str | None, why: str | None) -> list[Any]:
    """First step of a rollback: [the confirm row shown, the change in words]; nothing is written
    until confirmed. Refused without a signer, a reason, or a model to go back to."""
    require_annotator(name, request)
    check_reason(why, action="a rollback")
    _, _, change = rollback_plan(wb.store)
    return [gr.update(visible=True), f"<b>{html.escape(change)}.</b> Confirm to roll back."]


def roll_back(wb: Workbench, request: gr.Request | None, name: str | None, why: str | None, seen: Any,
              base: str | None, cand: str | None) -> list[Any]:
    """Confirmed: production back to the run before, signed with the reason. [message, reason
    emptied, confirm row hidden, *overview]."""
    was, now = rollback(wb.store, actor=require_annotator(name, request), reason=why)
    note = message_html(f"production rolled back from run {was} to run {now}")
    return [note, "", gr.update(visible=False), *overview(wb, seen, base, cand, force=True)]
