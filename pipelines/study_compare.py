"""C3 over seeds, writer side: two configs compared on every seed they were trained at, with a
go/no-go verdict against the candidate's gate policy that says when a difference is seed noise.

A side is named as
    STUDY:CONFIG   the succeeded seed runs of one config of a grid study,
    STUDY          the grid study's best config (its only one, for a seeds-only study),
    RUN            one training run (one seed: the verdict then asks for more seeds).
Each run is scored by its own evaluation of the split (metrics.json); the comparison
(core/seed_comparison.py) is saved as JSON and Markdown under the candidate's folder
(comparisons/<baseline>-<split>/).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.config import ExperimentConfig
from core.run_folder import METRICS_FILE, write_json
from core.seed_comparison import compare_seeds
from core.store import Store, StoreError
from pipelines.promotion import COMPARISONS_DIR
from pipelines.study import KIND, Study

SEED_COMPARISON_FILES = {"json": "seed_comparison.json", "markdown": "seed_comparison.md"}


def is_seed_spec(store: Store, spec: str) -> bool:
    """Whether spec names a study side (STUDY or STUDY:CONFIG) rather than one run."""
    study_id = spec.split(":", 1)[0]
    try:
        return store.run(study_id)["kind"] == KIND
    except StoreError:
        return False


def seed_runs(store: Store, spec: str) -> tuple[str, list[str], Path]:
    """(the side's name, its succeeded run ids, the folder its comparisons go to) for STUDY,
    STUDY:CONFIG or RUN; StoreError in one line naming what is missing."""
    study_id, _, config = spec.partition(":")
    run = store.run(study_id)
    if run["kind"] == "train":
        if config:
            raise StoreError(f"{spec}: {study_id} is a training run, not a study; name a config as STUDY:CONFIG")
        if run["status"] != "succeeded":
            raise StoreError(f"run {study_id} is {run['status']}; only a succeeded run has numbers to compare")
        return study_id, [study_id], Path(run["run_dir"])
    if run["kind"] != KIND:
        raise StoreError(f"run {study_id} is a {run['kind']} run; compare training runs or grid studies")
    study = Study.load(Path(run["run_dir"]))
    if study.study != "grid":
        raise StoreError(f"study {study_id} is a {study.study} study: its runs train on different splits, so they "
                         "cannot stand for one config; compare grid studies or their configs")
    names = list(dict.fromkeys(t.name for t in study.trials))
    if not config:
        best = (run["summary"] or {}).get("best")
        if len(names) > 1 and not best:
            raise StoreError(f"study {study_id} has no best config yet (no trial succeeded); name one as "
                             f"{study_id}:CONFIG ({', '.join(names)})")
        config = names[0] if len(names) == 1 else best["name"]
    if config not in names:
        raise StoreError(f"{spec}: study {study_id} has no config {config!r}; its configs: {', '.join(names)}")
    runs = [t.run_id for t in study.trials if t.name == config and t.status == "succeeded"]
    if not runs:
        raise StoreError(f"{spec}: no trial of config {config!r} succeeded; resume the study first")
    return f"{study_id}:{config}", runs, study.study_dir


def compare_seed_runs(store: Store, *, baseline: str, candidate: str, split: str = "test") -> tuple[dict[str, Any], dict[str, Path]]:
    """Compare the two sides on split over their seeds (core.seed_comparison.compare_seeds)
    against the candidate's gate policy; saved beside the candidate. Returns the comparison
    and its files."""
    base_name, base_runs, _ = seed_runs(store, baseline)
    cand_name, cand_runs, folder = seed_runs(store, candidate)
    policy = ExperimentConfig.from_dict(store.run(cand_runs[0])["config"]).gates
    comparison = compare_seeds(baseline=[_report(store, r, split) for r in base_runs],
                               candidate=[_report(store, r, split) for r in cand_runs], policy=policy)
    comparison.update(split=split, baseline=base_name, candidate=cand_name, baseline_runs=base_runs,
                      candidate_runs=cand_runs)
    out = folder / COMPARISONS_DIR / f"{base_name.replace(':', '_').replace('/', '_')}-{split}"
    out.mkdir(parents=True, exist_ok=True)
    files = {key: out / name for key, name in SEED_COMPARISON_FILES.items()}
    write_json(files["json"], comparison)
    files["markdown"].write_text("\n".join(seed_comparison_lines(comparison)) + "\n")
    return comparison, files


def _report(store: Store, run_id: str, split: str) -> dict[str, Any]:
    metrics = json.loads((Path(store.run(run_id)["run_dir"]) / METRICS_FILE).read_text())
    if split not in metrics["splits"]:
        raise StoreError(f"run {run_id} was not evaluated on the {split} split")
    return metrics["splits"][split]["given"]


def seed_comparison_lines(comparison: dict[str, Any]) -> list[str]:
    """The comparison as a person reads it (the CLI prints it; the Markdown file holds it)."""
    seeds = comparison["seeds"]
    lines = [f"{comparison['split']}: {comparison['candidate']} ({seeds['candidate']} seeds) vs "
             f"{comparison['baseline']} ({seeds['baseline']} seeds); means over seeds, deltas with 95% Welch intervals",
             f"  verdict: {comparison['verdict']['headline']}"]
    lines += [f"    also: {reason}" for reason in comparison["verdict"]["reasons"][1:]]
    lines += [f"    note: {note}" for note in comparison["verdict"]["notes"]]
    names = {"accuracy": "accuracy", "f1_macro": "F1-macro", "balanced_accuracy": "balanced accuracy",
             "rare_class_f1": f"rare-class F1 ({', '.join(comparison['rare_classes'])})"}
    for metric, entry in comparison["overall"].items():
        lines.append(f"  {names[metric]}: {_mean(entry['baseline'])} -> {_mean(entry['candidate'])}, "
                     f"delta {_delta(entry['delta'])}")
    for label, change in comparison["per_class"].items():
        relative = change["accuracy_relative_change"]
        lines.append(f"  {label:<22} accuracy {_number(change['baseline_accuracy'])} -> "
                     f"{_number(change['candidate_accuracy'])}"
                     + (f" ({relative:+.1%} relative)" if relative is not None else "")
                     + f", delta {_delta(change['accuracy_delta'])}")
    return lines


def _mean(entry: dict[str, Any]) -> str:
    if entry["mean"] is None:
        return "-"
    return f"{entry['mean']:.4f}" + (f" ± {entry['std']:.4f}" if entry["std"] is not None else "")


def _delta(delta: dict[str, Any]) -> str:
    if delta["delta"] is None:
        return "-"
    interval = "" if delta["ci95_low"] is None else f" [{delta['ci95_low']:+.4f}, {delta['ci95_high']:+.4f}]"
    noise = {True: " (within seed noise)", False: " (beyond seed noise)", None: ""}[delta["within_noise"]]
    return f"{delta['delta']:+.4f}{interval}{noise}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
