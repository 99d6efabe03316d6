"""How well the audit finds label errors: precision and recall at review budgets (issues 6, 11).

Two datasets, each with N planted label errors known only to the bench:
- demo: a fresh demo session (600 siren-task clips), trained with demo-fast and audited with
  the cross-validated label-issue ranking. If a reviewer listens to the first B proposals of
  each method, how many planted errors do they hear (precision = found / reviewed, recall =
  found / N; higher is better)? Methods side by side:
    extreme_off          the audited model's confidently-wrong clips (A1), most off first;
    self_confidence      cleanlab on K-fold out-of-sample probabilities (what the queue uses);
    normalized_margin    cleanlab's other score on the same probabilities;
    in_sample            self_confidence on the audited model's own probabilities, to show
                         what cross-validation buys (the model memorised its training labels).
  Budgets: N/2, N, 2N, 3N. The quality bar: recall_at_2n >= 0.8 for the queue's method.
- short_clips: 800 spoken digits "zero".."nine" from 10 eSpeak NG voices (the speakers, one source
  group each), about 0.5 s, written at 8 kHz and imported from a CSV manifest, 5% of the labels
  flipped (the truth stays in metadata). The queue a reviewer gets (label issues by rank,
  then extreme-off) is scored: recall within its first 2N >= 0.8, precision within its first
  N >= 0.6; and the same clips with every label right get at most 2% of them proposed.
The last line printed is one JSON object.

    python bench/audit_quality.py [--folds 5] [--cv-set train.epochs=10] [--parts demo,short_clips]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from scipy.signal import resample_poly

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.label_issues import DEFAULT_LABEL_QUALITY_METHOD, label_quality  # noqa: E402
from core.review_sampling import review_curve  # noqa: E402
from core.audit_child import EXTREME_OFF_FILE  # noqa: E402
from core.store import Store  # noqa: E402
from pipelines.audit import CROSSVAL_DIR, DEFAULT_CV_OVERRIDES, LABEL_ISSUES_FILE, audit  # noqa: E402
from pipelines.demo import DEFAULT_AUDIO, build_demo_session  # noqa: E402
from pipelines.finetune import finetune  # noqa: E402
from pipelines.importing import import_dataset  # noqa: E402
from pipelines.speech_synth import SAMPLE_RATE_HZ, Voice, synthesize  # noqa: E402

QUEUE_METHOD = DEFAULT_LABEL_QUALITY_METHOD
PARTS = ("demo", "short_clips")

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPEAKERS = {  # one source group each: the import's 60/20/20 split and the folds keep a speaker whole
    "ana": Voice("en+f3", rate_wpm=170, pitch=65), "ben": Voice("en+m1", rate_wpm=165, pitch=40),
    "cal": Voice("en-us+f2", rate_wpm=185, pitch=70), "dev": Voice("en-us+m2", rate_wpm=200, pitch=30),
    "eli": Voice("en-gb-x-rp+m3", rate_wpm=150, pitch=35), "fay": Voice("en-gb-x-rp+f5", rate_wpm=155, pitch=55),
    "gus": Voice("en-gb-scotland+m4", rate_wpm=175, pitch=45), "hal": Voice("en-029+m5", rate_wpm=195, pitch=50),
    "ivy": Voice("en-us-nyc+f1", rate_wpm=160, pitch=75), "jon": Voice("en-gb-x-gbclan+m7", rate_wpm=180, pitch=45),
}
TAKES = 8  # clips per word and speaker: 800 clips
WRITE_RATE_HZ = 8000  # telephone rate: below the features' 16 kHz, as real short-clip sets often are
CLIP_S = 0.5
ERROR_SHARE = 0.05
SHORT_PRESET = "short-clips"  # the audited model and the fold models (clip length auto: about 0.6 s here)


# --- the demo ------------------------------------------------------------------------------------

def rankings(store: Store, audit_run_id: str, run_dir: Path) -> dict[str, list[int]]:
    """Clip ids in review order for every method."""
    ranked = pd.read_parquet(run_dir / CROSSVAL_DIR / LABEL_ISSUES_FILE)
    classes = sorted(ranked.label.unique())
    y = ranked.label.map({c: i for i, c in enumerate(classes)}).to_numpy()
    oof = np.stack(ranked.probs.to_numpy())
    orders = {method: ranked.clip_id.to_numpy()[np.argsort(label_quality(labels=y, pred_probs=oof, method=method),
                                                            kind="stable")].tolist()
              for method in ("self_confidence", "normalized_margin")}
    extreme = pd.read_parquet(run_dir / EXTREME_OFF_FILE)
    orders = {"extreme_off": extreme.clip_id.tolist(), **orders}
    predictions = store.predictions(audit_run_id)
    in_sample = np.stack(predictions.probs.map(np.asarray).to_numpy())
    y_in = predictions.label.map({c: i for i, c in enumerate(classes)}).to_numpy()
    order = np.argsort(label_quality(labels=y_in, pred_probs=in_sample, method=QUEUE_METHOD), kind="stable")
    orders["in_sample"] = predictions.clip_id.to_numpy()[order].tolist()
    return orders


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def demo_figures(scratch: Path, *, folds: int, cv_set: list[str]) -> dict:
    """Train and audit a fresh demo session; print the per-method table; return its figures."""
    session_dir = scratch / "demo"
    started = time.perf_counter()
    with Store.open(session_dir) as store:
        build_demo_session(session_dir=session_dir, audio_dir=DEFAULT_AUDIO, progress=False, store=store)
        trained = finetune(store, preset="demo-fast", init_from="none", progress=False)
        train_s = time.perf_counter() - started
        audited = audit(store, run_id=trained.run_id, label_issues=True, folds=folds, cv_overrides=cv_set, progress=False)
        audit_s = time.perf_counter() - started - train_s
        if audited.status != "succeeded":
            raise SystemExit(f"demo audit {audited.status}: {audited.error}")
        truth = store.clips().set_index("id").metadata.map(lambda m: bool(json.loads(m)["label_error"]))
        orders = rankings(store, audited.run_id, audited.run_dir)
        queued = audited.proposals[audited.proposals.method == QUEUE_METHOD].clip_id.tolist()
        extreme = pd.read_parquet(audited.run_dir / EXTREME_OFF_FILE).clip_id
    n_errors = int(truth.sum())
    budgets = [n_errors // 2, n_errors, 2 * n_errors, 3 * n_errors]
    curves = {method: review_curve(is_error_in_order=truth[order].to_numpy(), n_errors=n_errors, budgets=budgets)
              for method, order in orders.items()}
    queue_curve = review_curve(is_error_in_order=truth[queued].to_numpy(), n_errors=n_errors, budgets=[2 * n_errors])[0]

    print(f"demo session: {len(truth)} clips, N = {n_errors} planted label errors; "
          f"training {train_s:.0f} s, audit with {folds}-fold cross-validation {audit_s:.0f} s")
    print(f"{'budget':>8} " + " ".join(f"{m + ' P/R':>24}" for m in curves))
    for i, budget in enumerate(budgets):
        cells = [f"{_fmt(c[i]['precision'])} / {c[i]['recall']:.2f} ({c[i]['found']:>2})" for c in curves.values()]
        print(f"{budget:>8} " + " ".join(f"{cell:>24}" for cell in cells))
    print(f"the queue holds {len(queued)} {QUEUE_METHOD} proposals (sized by cleanlab's noise estimate); among its "
          f"first {2 * n_errors}: recall {queue_curve['recall']:.3f}; extreme-off flagged {len(extreme)}, "
          f"{int(truth[extreme].sum())} of them planted errors")
    return {
        "n_errors": n_errors, "queue_method": QUEUE_METHOD, "recall_at_2n": round(curves[QUEUE_METHOD][2]["recall"], 4),
        "queue_recall_at_2n": round(queue_curve["recall"], 4), "queue_size": len(queued),
        "extreme_off": len(extreme), "extreme_off_planted": int(truth[extreme].sum()),
        "methods": {m: {f"recall_at_{b}": round(c[i]["recall"], 4) for i, b in enumerate(budgets)} |
                    {f"precision_at_{b}": c[i]["precision"] and round(c[i]["precision"], 4) for i, b in enumerate(budgets)}
                    for m, c in curves.items()},
        "train_s": round(train_s, 1), "audit_s": round(audit_s, 1),
    }


# --- short clips: spoken digits ----------------------------------------------------------------------

def build_spoken_digits(folder: Path, *, seed: int = 0) -> tuple[Path, Path]:
    """Write the spoken-digit clips and two manifests over them: clean.csv (every label right)
    and noisy.csv (ERROR_SHARE of the labels flipped to another digit; true_label and
    label_error ride along as metadata). Returns (clean, noisy)."""
    rng = np.random.default_rng(seed)
    rows = []
    for speaker, voice in SPEAKERS.items():
        for word in DIGITS:
            for take in range(TAKES):
                path = folder / "audio" / speaker / f"{word}-{take}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(path), _spoken_clip(word, voice, rng), WRITE_RATE_HZ, subtype="PCM_16")
                rows.append({"path": str(path.relative_to(folder)), "label": word, "group": speaker, "true_label": word})
    clean = pd.DataFrame(rows).assign(label_error=False)
    noisy = clean.copy()
    flipped = rng.choice(len(noisy), size=int(round(ERROR_SHARE * len(noisy))), replace=False)
    for i in flipped:
        noisy.loc[i, "label"] = rng.choice([w for w in DIGITS if w != noisy.loc[i, "true_label"]])
    noisy.loc[flipped, "label_error"] = True
    clean.to_csv(folder / "clean.csv", index=False)
    noisy.to_csv(folder / "noisy.csv", index=False)
    return folder / "clean.csv", folder / "noisy.csv"


def _spoken_clip(word: str, voice: Voice, rng: np.random.Generator) -> np.ndarray:
    """One take: the speaker's voice with its rate and pitch jittered, trimmed, resampled to
    8 kHz, placed at a random onset in a CLIP_S canvas (longer words keep their length), with
    a little noise (25-40 dB SNR)."""
    take = dataclasses.replace(voice, rate_wpm=int(voice.rate_wpm + rng.integers(-15, 16)),
                               pitch=int(np.clip(voice.pitch + rng.integers(-8, 9), 0, 100)))
    wave = synthesize(word, voice=take)
    loud = np.flatnonzero(np.abs(wave) > 0.02 * np.abs(wave).max())
    wave = resample_poly(wave[loud[0]:loud[-1] + 1], WRITE_RATE_HZ // 50, SAMPLE_RATE_HZ // 50)
    onset = int(rng.integers(0, int(0.06 * WRITE_RATE_HZ)))
    clip = np.zeros(max(int(CLIP_S * WRITE_RATE_HZ), onset + len(wave) + int(0.02 * WRITE_RATE_HZ)))
    clip[onset:onset + len(wave)] = wave * rng.uniform(0.4, 0.9) / np.abs(wave).max()
    noise_rms = np.sqrt(np.mean(clip ** 2)) / 10 ** (rng.uniform(25, 40) / 20)
    return np.clip(clip + rng.normal(0, noise_rms, len(clip)), -1, 1).astype(np.float32)


def audit_spoken_digits(scratch: Path, manifest: Path, *, folds: int, cv_set: list[str]) -> dict:
    """Import one manifest into a fresh session, train, audit with label issues; what the queue holds."""
    session_dir = scratch / f"spoken-{manifest.stem}"
    started = time.perf_counter()
    with Store.open(session_dir) as store:
        import_dataset(store, manifest, progress=False)
        trained = finetune(store, preset=SHORT_PRESET, init_from="none", progress=False)
        if trained.status != "succeeded":
            raise SystemExit(f"short-clip training {trained.status}: {trained.result.get('error')}")
        audited = audit(store, run_id=trained.run_id, label_issues=True, folds=folds, cv_preset=SHORT_PRESET,
                        cv_overrides=cv_set, progress=False)
        if audited.status != "succeeded":
            raise SystemExit(f"short-clip audit {audited.status}: {audited.error}")
        truth = store.clips().set_index("id").metadata.map(lambda m: bool(json.loads(m)["label_error"]))
        print("\n".join(audited.lines()))
    queue = audited.proposals.clip_id.tolist()  # as raised: label issues by rank, then extreme-off
    return {"clips": len(truth), "n_errors": int(truth.sum()), "queue": queue, "truth": truth,
            "by_method": audited.proposals.groupby("method").size().to_dict() if queue else {},
            "val_accuracy": trained.result.get("accuracy", {}).get("val"), "seconds": time.perf_counter() - started}


def short_clip_figures(scratch: Path, *, folds: int, cv_set: list[str]) -> dict:
    clean_manifest, noisy_manifest = build_spoken_digits(scratch / "spoken-digits")
    noisy = audit_spoken_digits(scratch, noisy_manifest, folds=folds, cv_set=cv_set)
    clean = audit_spoken_digits(scratch, clean_manifest, folds=folds, cv_set=cv_set)
    n = noisy["n_errors"]
    hits = noisy["truth"][noisy["queue"]].to_numpy()
    at_n, at_2n = review_curve(is_error_in_order=hits, n_errors=n, budgets=[n, 2 * n])
    figures = {"clips": noisy["clips"], "n_errors": n, "queue_size": len(noisy["queue"]),
               "recall_at_2n": round(at_2n["recall"], 4), "precision_at_n": at_n["precision"] and round(at_n["precision"], 4),
               "clean_proposed": len(clean["queue"]), "clean_proposed_share": round(len(clean["queue"]) / clean["clips"], 4),
               "noisy_by_method": noisy["by_method"], "clean_by_method": clean["by_method"],
               "seconds": round(noisy["seconds"] + clean["seconds"], 1)}
    print(f"short clips (spoken digits, {len(SPEAKERS)} eSpeak NG voices, {WRITE_RATE_HZ} Hz): {figures['clips']} clips, "
          f"N = {n} planted errors; the queue holds {figures['queue_size']}: recall within 2N {figures['recall_at_2n']:.2f} "
          f"(goal >= 0.8), precision within N {_fmt(figures['precision_at_n'])} (goal >= 0.6); with every label right "
          f"{figures['clean_proposed']} proposed ({figures['clean_proposed_share']:.1%}, goal <= 2%); "
          f"{figures['seconds']:.0f} s")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--cv-set", action="append", default=[], metavar="KEY=VALUE",
                        help="fold preset overrides, after the audit's own (train.epochs=8)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)}")
    parser.add_argument("--scratch", type=Path, help="build the sessions here instead of a temporary folder")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not parts or set(parts) - set(PARTS):
        parser.error(f"--parts: {args.parts!r} must name some of {', '.join(PARTS)}")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = args.scratch or Path(tmp)
        line = {"folds": args.folds, "cv_overrides": [*DEFAULT_CV_OVERRIDES, *args.cv_set]}
        if "demo" in parts:
            line |= demo_figures(scratch, folds=args.folds, cv_set=args.cv_set)
        if "short_clips" in parts:
            line["short_clips"] = short_clip_figures(scratch, folds=args.folds, cv_set=args.cv_set)
    print(json.dumps(line))


if __name__ == "__main__":
    main()
