"""A study's report, written into its folder (runs/<study>/) whenever it ends or stops.

Grid: one row per config, sorted by the chosen metric's mean on val over the config's seeds
(best first), each metric as mean, std and 95% interval, the config's overrides and its best
seed's run; test numbers stand beside val but never choose. Cross-validation: one row per fold
(test numbers over seeds), the mean, std and 95% interval over folds, and the held-out group the
models got most wrong. Both: results.json (everything), results.csv (the table), trials.csv (one
row per run), results.md, and plots/spread.png (a bar per config or fold: mean, one standard
deviation, every seed as a dot). `timing` says how much of each trial's wall time went outside
the training process (manifest freeze, child start, ingest).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.plots import plot_spread
from core.run_folder import write_json
from core.store import Store
from core.study import METRIC_COLUMNS, rank, spread, summarise

if TYPE_CHECKING:
    from pipelines.study import Study

RESULTS_FILES = {"json": "results.json", "csv": "results.csv", "trials_csv": "trials.csv", "markdown": "results.md",
                 "plot": "plots/spread.png"}
TIMING_COLUMNS = ("wall_s", "child_s", "overhead_s")
CROSSVAL_COLUMNS = ("test_accuracy", "test_balanced_accuracy", "test_f1_macro")
SHOWN = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "f1_macro": "F1-macro"}


def trials_frame(study: Study) -> pd.DataFrame:
    """One row per trial: name, seed, fold, status, run_id, error, every metric, timing."""
    rows = [{"name": t.name, "seed": t.seed, "fold": t.fold, "status": t.status, "run_id": t.run_id, "error": t.error,
             **{c: t.metrics.get(c) for c in METRIC_COLUMNS}, **{k: t.timing.get(k) for k in TIMING_COLUMNS}}
            for t in study.trials]
    return pd.DataFrame(rows).astype({c: float for c in (*METRIC_COLUMNS, *TIMING_COLUMNS)})


def write_report(store: Store, study: Study) -> tuple[dict[str, Any], dict[str, Path]]:
    """Write the report files; returns results.json's content and the files by RESULTS_FILES key."""
    trials = trials_frame(study)
    body = _grid(study, trials) if study.study == "grid" else _crossval(store, study, trials)
    counts = study.counts()
    report = {"study_id": study.study_id, "study": study.study, "status": study.status, "preset": study.preset,
              "set": study.overrides, "seeds": study.seeds, "frozen_at_decision": study.as_of, **body["report"],
              "counts": counts, "timing": timing(trials), "trials": _records(trials)}
    report["summary"] = {"study": study.study, "trials": len(study.trials), **counts, "best": report.get("best"),
                         "message": _headline(study, report)}
    folder = study.study_dir
    files = {key: folder / name for key, name in RESULTS_FILES.items()}
    write_json(files["json"], report)
    body["table"].to_csv(files["csv"], index=False)
    trials.to_csv(files["trials_csv"], index=False)
    files["markdown"].write_text("\n".join(body["markdown"]) + "\n")
    if any(values for values in body["plot"]["values"].values()):
        plot_spread(files["plot"], **body["plot"])
    else:
        files.pop("plot")
    return report, files


def timing(trials: pd.DataFrame) -> dict[str, Any]:
    """Where the trials' time went: their wall time, the training processes' own time, and the
    rest (overhead: manifest freeze, run folder, child start, ingest) as a share of the wall time."""
    timed = trials.dropna(subset=["wall_s"])
    wall, child = float(timed["wall_s"].sum()), float(timed["child_s"].sum())
    return {"trials_timed": len(timed), "wall_s": round(wall, 1), "child_s": round(child, 1),
            "overhead_s": round(wall - child, 1), "overhead_share": round((wall - child) / wall, 4) if wall else None,
            "overhead_s_per_trial": round((wall - child) / len(timed), 2) if len(timed) else None}


# --- grid -------------------------------------------------------------------------------------------

def _grid(study: Study, trials: pd.DataFrame) -> dict[str, Any]:
    column = f"val_{study.metric}"
    table = rank(summarise(trials, by="name", columns=METRIC_COLUMNS), column=f"{column}_mean")
    overrides = {c["name"]: c["set"] for c in study.settings["grid"]["configs"]}
    table["overrides"] = [json.dumps(overrides.get(name, {})) for name in table["name"]]
    table["best_run_id"] = [best_run(trials, name, column) for name in table["name"]]
    best = None
    if table["rank"].notna().any():
        top = table.iloc[0]
        best = {"name": top["name"], "run_id": top["best_run_id"], "overrides": overrides.get(top["name"], {}),
                **{c: _spread_of(top, c) for c in METRIC_COLUMNS}}
    values = {name: trials.loc[(trials["name"] == name) & (trials["status"] == "succeeded"), column].tolist()
              for name in table["name"]}
    report = {"metric": study.metric, "selected_on": "val", "init_from": study.init_from, "best": best,
              "configs": _records(table)}
    markdown = [f"# Study {study.study_id}: grid over {study.preset}", "",
                f"{len(table)} configs x {len(study.seeds)} seeds ({', '.join(map(str, study.seeds))}), labels frozen at "
                f"decision {study.as_of}, every trial from {_start(study.init_from)}. Ranked by val {SHOWN[study.metric]}: mean "
                "± std over seeds [95% t-interval of the mean]; test is reported, never selected on.", "",
                *_table(["rank", "config", "seeds ok", f"val {SHOWN[study.metric]}", "val accuracy", "test accuracy",
                         "test F1-macro", "best run"],
                        [[_rank(r["rank"]), r["name"], f"{r['succeeded']}/{r['trials']}", spread_cell(r, column),
                          spread_cell(r, "val_accuracy"), spread_cell(r, "test_accuracy"), spread_cell(r, "test_f1_macro"),
                          r["best_run_id"] or "-"] for _, r in table.iterrows()]),
                "", "## Configs", "", *[f"- **{name}**: `{json.dumps(o) if o else 'the preset as it is'}`"
                                        for name, o in overrides.items()],
                *_failures(trials), "", f"![val {study.metric} per config]({RESULTS_FILES['plot']})"]
    return {"report": report, "table": table, "markdown": markdown,
            "plot": {"values": values, "ylabel": f"val {SHOWN[study.metric]}",
                     "title": f"val {SHOWN[study.metric]} per config (bar: mean, line: ±1 std, dots: seeds)"}}


def best_run(trials: pd.DataFrame, name: str, column: str) -> str | None:
    done = trials[(trials["name"] == name) & (trials["status"] == "succeeded")].dropna(subset=[column])
    return None if done.empty else str(done.sort_values(column, ascending=False, kind="stable")["run_id"].iloc[0])


# --- cross-validation -------------------------------------------------------------------------------

def _crossval(store: Store, study: Study, trials: pd.DataFrame) -> dict[str, Any]:
    splits = study.splits()
    left_out = set(splits.loc[splits["left_out"], "group"]) if "left_out" in splits else set(splits["group"])
    folds = summarise(trials, by="name", columns=CROSSVAL_COLUMNS)
    held_out = {fold: sorted(splits.loc[splits[fold] == "test", "group"].unique(), key=lambda g: (g not in left_out, g))
                for fold in folds["name"]}
    folds.insert(1, "groups", [len(held_out[f]) for f in folds["name"]])
    folds.insert(2, "held_out", [_names(held_out[f]) for f in folds["name"]])
    folds.insert(3, "test_clips", [int((splits[f] == "test").sum()) for f in folds["name"]])
    across = {c: spread(folds[f"{c}_mean"].tolist()) for c in CROSSVAL_COLUMNS}
    groups = group_accuracy(store, trials, splits)
    own = groups[groups["group"].isin(left_out)]  # leave one speaker out: the worst speaker, not a dealt sound
    worst = own.iloc[0].to_dict() if len(own) else None
    settings = study.settings
    how = ("leave one group out" if settings["leave_one_group_out"] else f"{settings['folds']}-fold") + " by source group"
    if settings.get("group_class"):
        how = (f"leave one {settings['group_class']} group out (the other classes' groups dealt over the folds as "
               "extra test clips)")
    report = {"folds": _records(folds), "across_folds": across, "worst_group": worst, "groups": _records(groups),
              "design": how, "held_out_groups": held_out}
    markdown = [f"# Study {study.study_id}: cross-validation of {study.preset}", "",
                f"{how}: {len(folds)} folds x {len(study.seeds)} seeds ({', '.join(map(str, study.seeds))}), labels "
                f"frozen at decision {study.as_of}. Each fold holds its groups out as test; val (early stopping) is "
                "drawn from the other groups; every model trains from scratch. Cells: mean ± std over seeds "
                "[95% t-interval].", "",
                *_table(["fold", "held-out groups", "test clips", "seeds ok", "accuracy", "balanced accuracy", "F1-macro"],
                        [[r["name"], r["held_out"], r["test_clips"], f"{r['succeeded']}/{r['trials']}",
                          *(spread_cell(r, c) for c in CROSSVAL_COLUMNS)] for _, r in folds.iterrows()]),
                "", "Over folds (mean ± std of the fold means [95% t-interval]): "
                + "; ".join(f"{SHOWN[c.removeprefix('test_')]} {spread_text(across[c])}" for c in CROSSVAL_COLUMNS), "",
                (f"Worst group: **{worst['group']}** ({worst['fold']}): accuracy {worst['accuracy']:.3f} on "
                 f"{worst['clips']} clips" if worst else "No group was scored."),
                *_failures(trials), "", f"![test accuracy per fold]({RESULTS_FILES['plot']})"]
    values = {fold: trials.loc[(trials["name"] == fold) & (trials["status"] == "succeeded"), "test_accuracy"].tolist()
              for fold in folds["name"]}
    return {"report": report, "table": folds, "markdown": markdown,
            "plot": {"values": values, "ylabel": "test accuracy",
                     "title": "test accuracy per fold (bar: mean, line: ±1 std, dots: seeds)"}}


def group_accuracy(store: Store, trials: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """Accuracy of each held-out group over its fold's succeeded seeds (every test prediction
    counted), worst first: group, fold, clips (per seed), accuracy."""
    rows = []
    for trial in trials[trials["status"] == "succeeded"].itertuples():
        test = store.predictions(trial.run_id, split="test")
        test = test.assign(group=test["clip_id"].map(splits.set_index("clip_id")["group"]), fold=trial.fold)
        rows.append(test.assign(correct=test["label"] == test["predicted"], seed=trial.seed))
    if not rows:
        return pd.DataFrame(columns=["group", "fold", "clips", "accuracy"])
    scored = pd.concat(rows)
    table = scored.groupby(["group", "fold"], sort=False).agg(
        clips=("clip_id", "nunique"), accuracy=("correct", "mean")).reset_index()
    return table.sort_values(["accuracy", "clips"], ascending=[True, False], kind="stable").reset_index(drop=True)


# --- shared ----------------------------------------------------------------------------------------

def report_lines(study: Study, report: dict[str, Any], files: dict[str, Path]) -> list[str]:
    """What the CLI prints: the headline, the table's rows, failures, where the report is."""
    lines = [report["summary"]["message"]]
    if study.study == "grid":
        column = f"val_{study.metric}"
        for row in report["configs"]:
            lines.append(f"  {_rank(row['rank']):>3}. {row['name']}: val {SHOWN[study.metric]} {spread_cell(row, column)}; "
                         f"test accuracy {spread_cell(row, 'test_accuracy')} ({row['succeeded']}/{row['trials']} seeds)")
        if report["best"]:
            lines.append(f"  best: {report['best']['name']} (run {report['best']['run_id']}, its best seed)")
    else:
        for row in report["folds"]:
            lines.append(f"  {row['name']} ({row['held_out']}; {row['test_clips']} test clips): "
                         + ", ".join(f"{SHOWN[c.removeprefix('test_')]} {spread_cell(row, c)}" for c in CROSSVAL_COLUMNS))
        lines.append("  over folds: " + "; ".join(f"{SHOWN[c.removeprefix('test_')]} {spread_text(report['across_folds'][c])}"
                                                 for c in CROSSVAL_COLUMNS))
        worst = report["worst_group"]
        if worst:
            lines.append(f"  worst group: {worst['group']} ({worst['fold']}): accuracy {worst['accuracy']:.3f} on "
                         f"{worst['clips']} clips")
    for trial in report["trials"]:
        if trial["status"] == "failed":
            lines.append(f"  failed: {trial['name']} seed {trial['seed']} (run {trial['run_id'] or 'none'}): {trial['error']}")
    lines.append(f"  report: {files['markdown']}")
    return lines


def _headline(study: Study, report: dict[str, Any]) -> str:
    counts = report["counts"]
    shape = (f"{len(study.settings['grid']['configs'])} configs" if study.study == "grid"
             else f"{len(report['folds'])} folds, {report['design']}")
    head = (f"study {study.study_id} ({study.study}, {shape} x {len(study.seeds)} seeds): {study.status}; "
            f"{counts['succeeded']} of {len(study.trials)} trials succeeded, {counts['failed']} failed")
    if counts["cancelled"] or counts["pending"]:
        head += f", {counts['cancelled'] + counts['pending']} not finished (resume with --resume {study.study_id})"
    if study.study == "grid":
        best = report["best"]
        return head + (f"; best on val {SHOWN[study.metric]}: {best['name']} {spread_text(best[f'val_{study.metric}'])}"
                       if best else "")
    return head + f"; test accuracy over folds {spread_text(report['across_folds']['test_accuracy'])}"


def _spread_of(row: pd.Series, column: str) -> dict[str, float | None]:
    return {name: _number(row[f"{column}_{name}"]) for name in ("mean", "std", "ci95_low", "ci95_high")}


def spread_cell(row: Any, column: str) -> str:
    return spread_text({name: _number(row[f"{column}_{name}"]) for name in ("mean", "std", "ci95_low", "ci95_high")})


def spread_text(s: dict[str, Any]) -> str:
    """0.912 ± 0.010 [0.887, 0.937]; one value alone: 0.912 (one seed); none: -."""
    if s.get("mean") is None:
        return "-"
    if s.get("std") is None:
        return f"{s['mean']:.3f} (one value)"
    return f"{s['mean']:.3f} ± {s['std']:.3f} [{s['ci95_low']:.3f}, {s['ci95_high']:.3f}]"


def _names(groups: list[str], shown: int = 3) -> str:
    """'ana, ben, cal' or 'ana, ben, cal + 4 more'."""
    return ", ".join(groups[:shown]) + (f" + {len(groups) - shown} more" if len(groups) > shown else "")


def _start(init_from: str) -> str:
    return "scratch (the preset's own start)" if init_from in ("none", "") else init_from


def _rank(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else str(int(value))


def _number(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows: NaN as None, numpy numbers as Python ones."""
    return json.loads(frame.replace({np.nan: None}).to_json(orient="records"))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def _failures(trials: pd.DataFrame) -> list[str]:
    failed = trials[trials["status"] == "failed"]
    if failed.empty:
        return []
    return ["", "## Failed trials", "", *(f"- {r.name} seed {r.seed} (run {r.run_id or 'none'}): {r.error}"
                                          for r in failed.itertuples())]
