"""A study as the Runs tab shows it: its headline and configs, the results table sorted by a
chosen metric (mean ± std [95% interval] over seeds), the error-bar plot, every trial, and the
trials that may be promoted through the gates. Plain values; only reads.

A grid's table is summarised from study.json's trials with the core's summarise and rank (the
same numbers as its report), so it fills in while the study runs; a cross-validation's folds
(held-out groups, the worst group) come from its report, written when it ends or stops.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from core.study import METRIC_COLUMNS, rank, summarise
from pipelines.study import KIND, Study
from pipelines.study_report import RESULTS_FILES, SHOWN, best_run, spread_cell, spread_text, trials_frame

TRIAL_COLUMNS = ["config or fold", "seed", "status", "run", "val F1-macro", "val accuracy", "test accuracy", "minutes"]
FOLD_COLUMNS = ["fold", "held-out groups", "test clips", "seeds ok", "accuracy", "balanced accuracy", "F1-macro"]
CROSSVAL_COLUMNS = ("test_accuracy", "test_balanced_accuracy", "test_f1_macro")


def is_study(run: dict[str, Any] | None) -> bool:
    return run is not None and run["kind"] == KIND


def load(run: dict[str, Any]) -> Study:
    return Study.load(Path(run["run_dir"]))


def report(study: Study) -> dict[str, Any] | None:
    """results.json, once the study ended or stopped."""
    path = study.study_dir / RESULTS_FILES["json"]
    return json.loads(path.read_text()) if path.is_file() else None


def sort_choices() -> list[tuple[str, str]]:
    """What a grid's table may be sorted by: each metric on val (selection) and test (reported)."""
    return [(f"{column.split('_', 1)[0]} {SHOWN[column.split('_', 1)[1]]}", column) for column in METRIC_COLUMNS]


def headline_markdown(run: dict[str, Any], study: Study) -> str:
    """What the study is and how it stands; for a grid, each config's overrides."""
    counts = study.counts()
    done = report(study)
    state = (done["summary"]["message"] if done and run["status"] not in ("queued", "running")
             else f"study {study.study_id}: {run['status']}; {counts['succeeded']} of {len(study.trials)} trials "
                  f"succeeded so far, {counts['failed']} failed")
    shape = (f"grid over preset **{study.preset}**, {len(study.settings['grid']['configs'])} config(s)"
             if study.study == "grid" else
             f"cross-validation of preset **{study.preset}**: "
             + ("leave one group out" if study.settings["leave_one_group_out"] else f"{study.settings['folds']} folds")
             + f" of {study.settings['groups']} source groups")
    start = {"none": "the preset's own start", "": "the preset's own start",
             "production": "the production model of the moment (the preset's own start while there was none)"}.get(
        study.init_from, study.init_from)
    changed = f"; settings changed from the preset: `{', '.join(study.overrides)}`" if study.overrides else ""
    lines = [f"### {state}", "",
             f"{shape} x {len(study.seeds)} seed(s) ({', '.join(map(str, study.seeds))}); labels frozen at decision "
             f"{study.as_of}; every trial from {start}{changed}."]
    if study.study == "grid":
        lines += ["", f"Configs are ranked by val {SHOWN[study.metric]}: mean ± std over seeds [95% t-interval of the "
                      "mean]; two configs whose intervals overlap are not told apart. Test is reported, never selected on.",
                  "", "**Configs**", ""]
        lines += [f"- **{c['name']}**: `{json.dumps(c['set']) if c['set'] else 'the settings above as they are'}`"
                  for c in study.settings["grid"]["configs"]]
    elif done:
        across = done["across_folds"]
        lines += ["", "Over folds (mean ± std of the fold means [95% t-interval]): "
                  + "; ".join(f"{SHOWN[c.removeprefix('test_')]} {spread_text(across[c])}" for c in CROSSVAL_COLUMNS)]
        worst = done["worst_group"]
        if worst:
            lines += ["", f"Worst held-out group: **{worst['group']}** ({worst['fold']}): accuracy "
                          f"{worst['accuracy']:.3f} on {worst['clips']} clips."]
    failed = [t for t in study.trials if t.status == "failed"]
    if failed:
        lines += ["", "**Failed trials**", ""] + [f"- {t.name} seed {t.seed} (run {t.run_id or 'none'}): {t.error}"
                                                   for t in failed]
    return "\n".join(lines)


def results_frame(study: Study, sort_by: str) -> pd.DataFrame:
    """A grid: one row per config, best first by sort_by's mean over seeds, each metric as
    mean ± std [95% interval]; a cross-validation: one row per fold (its report's)."""
    if study.study != "grid":
        return _folds_frame(study)
    trials = trials_frame(study)
    table = rank(summarise(trials, by="name", columns=METRIC_COLUMNS), column=f"{sort_by}_mean")
    shown = [sort_by, *(c for c in ("val_f1_macro", "val_accuracy", "test_accuracy", "test_f1_macro") if c != sort_by)]
    rows = [[_rank(r["rank"]), r["name"], f"{r['succeeded']}/{r['trials']}", *(spread_cell(r, c) for c in shown),
             best_run(trials, r["name"], sort_by) or "-"] for _, r in table.iterrows()]
    return pd.DataFrame(rows, columns=["rank", "config", "seeds ok", *(_label(c) for c in shown),
                                       f"best seed's run (by {_label(sort_by)})"])


def _folds_frame(study: Study) -> pd.DataFrame:
    done = report(study)
    if done is None:
        return pd.DataFrame({"": [f"the per-fold table is written when the study ends or stops ({study.study_id} has "
                                  f"{study.counts()['succeeded']} of {len(study.trials)} trials done)"]})
    rows = [[r["name"], r["held_out"], r["test_clips"], f"{r['succeeded']}/{r['trials']}",
             *(spread_cell(r, c) for c in CROSSVAL_COLUMNS)] for r in done["folds"]]
    return pd.DataFrame(rows, columns=FOLD_COLUMNS)


def trials_table(study: Study) -> pd.DataFrame:
    """Every trial (TRIAL_COLUMNS) in plan order, with its run and numbers once it finished."""
    frame = trials_frame(study)
    rows = [[t.name, t.seed, t.status, t.run_id or "-", _number(t.val_f1_macro), _number(t.val_accuracy),
             _number(t.test_accuracy), "-" if pd.isna(t.wall_s) else round(t.wall_s / 60, 2)]
            for t in frame.itertuples()]
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


def plot_path(study: Study) -> Path | None:
    """plots/spread.png (a bar per config or fold, ±1 std, each seed a dot), once written."""
    path = study.study_dir / RESULTS_FILES["plot"]
    return path if path.is_file() else None


def promotable(study: Study) -> list[tuple[str, str]]:
    """(shown name, run id) of a grid's succeeded trials, the best config's best seed first (by
    the study's metric on val); none for a cross-validation: a fold model trained on clips the
    session tests on, so no gate could judge it fairly."""
    if study.study != "grid":
        return []
    column = f"val_{study.metric}"
    trials = trials_frame(study)
    done = trials[trials["status"] == "succeeded"]
    if done.empty:
        return []
    order = rank(summarise(trials, by="name", columns=[column]), column=f"{column}_mean")["name"].tolist()
    best = best_run(trials, order[0], column)
    done = done.assign(order=done["name"].map(order.index)).sort_values(["order", column], ascending=[True, False])
    choices = [(f"{r.name} seed {r.seed}: run {r.run_id} (val {SHOWN[study.metric]} {getattr(r, column):.3f})"
                + (" - the best config's best seed" if r.run_id == best else ""), r.run_id) for r in done.itertuples()]
    return sorted(choices, key=lambda choice: choice[1] != best)


def _label(column: str) -> str:
    split, metric = column.split("_", 1)
    return f"{split} {SHOWN[metric]}"


def _rank(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else str(int(value))


def _number(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else f"{float(value):.3f}"
