"""What the optional heads (A10) do to the confusion they are meant to cut, over seeds.

`earmark heads-effect --preset P --seeds 42,123` trains one grid study with two named configs,
"without-heads" (both heads off) and "with-heads" (both on; the preset's weights, pairs and band),
at the same seeds, so seed i of one is paired with seed i of the other (same data order and
model start). The report names, for each class pair, how many clips of one class each side
predicts as the other (siren -> alert and alert -> siren), per seed and as mean ± 95% interval,
and the paired difference, on val and on test; beside it the ordinary seed comparison of the two
configs (pipelines/study_compare.py: overall metrics, per-class accuracy, go/no-go). The pairs are
the preset's contrastive pairs, or every pair of classes when it names none (a two-class task has
one). Saved as heads_effect.json / .md in the study's folder; `--study STUDY` reports on a heads
study that already trained.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.config import ConfigError, ExperimentConfig
from core.run_folder import METRICS_FILE, write_json
from core.seed_comparison import pair_confusions
from core.store import Store, StoreError
from core.study import EVAL_SPLITS, Grid, StudyConfig
from pipelines.study import KIND, Study, run_grid
from pipelines.study_compare import compare_seed_runs, seed_comparison_lines

WITHOUT, WITH = "without-heads", "with-heads"
HEADS_GRID = Grid((StudyConfig(name=WITHOUT, overrides={"heads.contrastive.enabled": False, "heads.envelope.enabled": False}),
                   StudyConfig(name=WITH, overrides={"heads.contrastive.enabled": True, "heads.envelope.enabled": True})))
FILES = {"json": "heads_effect.json", "markdown": "heads_effect.md"}


@dataclasses.dataclass
class HeadsEffect:
    study_id: str
    report: dict[str, Any]
    files: dict[str, Path]

    def lines(self) -> list[str]:
        return heads_effect_lines(self.report)


def run_heads_effect(store: Store, *, preset: str, seeds: Sequence[int] | str, overrides: Sequence[str] | None = None,
                     parallel: int = 1, keep_models: bool = True, progress: bool = True) -> HeadsEffect:
    """Train the preset without and with both heads at every seed (a grid study: each trial an
    ordinary run), then report (heads_effect_report). ConfigError in one line before anything
    trains for a bad preset, key or class pair."""
    outcome = run_grid(store, preset=preset, grid=HEADS_GRID, seeds=seeds, overrides=overrides, parallel=parallel,
                       keep_models=keep_models, progress=progress)
    return heads_effect_report(store, outcome.study_id)


def heads_effect_report(store: Store, study_id: str, *, pairs: Sequence[Sequence[str]] | None = None) -> HeadsEffect:
    """The report of a heads study (one run_heads_effect trained): pair confusions per split over
    the seeds both configs finished, and the seed comparison on test. StoreError in one line for
    a run that is no heads study or has no seed finished on both sides."""
    study = _heads_study(store, study_id)
    runs = _paired_runs(study)
    with_config = ExperimentConfig.from_dict(store.run(runs[0][1])["config"])
    pairs = [list(p) for p in pairs] if pairs else with_config.heads.contrastive.pairs or _every_pair(store, runs[0][1])
    seeds = [seed for seed, _, _ in runs]
    report: dict[str, Any] = {"study_id": study_id, "preset": study.preset, "set": study.overrides, "seeds": seeds,
                              "runs": {WITHOUT: [b for _, b, _ in runs], WITH: [c for _, _, c in runs]},
                              "pairs": pairs, "heads": with_config.heads.to_dict(), "splits": {}}
    for split in EVAL_SPLITS:
        reports = {name: [_split_report(store, run_id, split) for run_id in ids] for name, ids in report["runs"].items()}
        if any(r is None for side in reports.values() for r in side):
            continue
        try:
            report["splits"][split] = pair_confusions(baseline=reports[WITHOUT], candidate=reports[WITH], pairs=pairs)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    comparison, _ = compare_seed_runs(store, baseline=f"{study_id}:{WITHOUT}", candidate=f"{study_id}:{WITH}", split="test")
    report["comparison"] = comparison
    files = {key: study.study_dir / name for key, name in FILES.items()}
    write_json(files["json"], report)
    files["markdown"].write_text("\n".join(heads_effect_lines(report)) + "\n")
    return HeadsEffect(study_id=study_id, report=report, files=files)


def _heads_study(store: Store, study_id: str) -> Study:
    run = store.run(study_id)
    if run["kind"] != KIND:
        raise StoreError(f"run {study_id} is a {run['kind']} run, not a study; heads-effect reports on the study it trained")
    study = Study.load(Path(run["run_dir"]))
    names = {t.name for t in study.trials}
    if study.study != "grid" or not {WITHOUT, WITH} <= names:
        raise StoreError(f"study {study_id} has no '{WITHOUT}' and '{WITH}' configs; run earmark heads-effect to train one")
    return study


def _paired_runs(study: Study) -> list[tuple[int, str, str]]:
    """(seed, run without heads, run with heads) for every seed both configs finished."""
    done = {(t.name, t.seed): t.run_id for t in study.trials if t.status == "succeeded"}
    runs = [(seed, done[(WITHOUT, seed)], done[(WITH, seed)]) for seed in study.seeds
            if (WITHOUT, seed) in done and (WITH, seed) in done]
    if not runs:
        raise StoreError(f"study {study.study_id}: no seed finished both '{WITHOUT}' and '{WITH}'; resume it first "
                         f"(earmark grid --resume {study.study_id})")
    return runs


def _every_pair(store: Store, run_id: str) -> list[list[str]]:
    """Every pair of the run's classes (a two-class task has one)."""
    labels = json.loads((Path(store.run(run_id)["run_dir"]) / METRICS_FILE).read_text())["labels"]
    return [list(p) for p in itertools.combinations(labels, 2)]


def _split_report(store: Store, run_id: str, split: str) -> dict[str, Any] | None:
    splits = json.loads((Path(store.run(run_id)["run_dir"]) / METRICS_FILE).read_text())["splits"]
    return splits[split]["given"] if split in splits else None


def heads_effect_lines(report: dict[str, Any]) -> list[str]:
    """The report as a person reads it (the CLI prints it; the Markdown file holds it)."""
    seeds = ", ".join(map(str, report["seeds"]))
    lines = [f"heads effect, study {report['study_id']} (preset {report['preset']}; seeds {seeds}, the same on both "
             f"sides): clips of the true class predicted as the other, {WITHOUT} -> {WITH}; rates are means over seeds "
             "± 95% interval, deltas paired by seed (negative = fewer confusions)"]
    for split, rows in report["splits"].items():
        lines.append(f"  {split}:")
        for row in rows:
            lines.append(f"    {row['true']} -> {row['predicted']} ({row['clips']} clips): "
                         f"{_rate(row['baseline'])} {row['baseline_counts']} -> {_rate(row['candidate'])} "
                         f"{row['candidate_counts']}, delta {_delta(row['delta'])}")
    lines.append("  all classes, test, over seeds (earmark compare):")
    lines += [f"    {line}" for line in seed_comparison_lines(report["comparison"])]
    return lines


def _rate(entry: dict[str, Any]) -> str:
    if entry["mean"] is None:
        return "-"
    interval = "" if entry["ci95_low"] is None else f" [{entry['ci95_low']:.3f}, {entry['ci95_high']:.3f}]"
    return f"{entry['mean']:.3f}{interval}"


def _delta(delta: dict[str, Any]) -> str:
    if delta["delta"] is None:
        return "-"
    if delta["ci95_low"] is None:
        return f"{delta['delta']:+.3f} (one seed: cannot be told from seed noise)"
    noise = "within seed noise" if delta["within_noise"] else "beyond seed noise"
    return f"{delta['delta']:+.3f} [{delta['ci95_low']:+.3f}, {delta['ci95_high']:+.3f}] ({noise})"
