"""VAD hygiene (B6): a voice-activity detector listens to every speech / non-speech clip, and
the clips it contradicts go to the review queue.

A SPEECH clip fails when too few of its frames hold speech (mostly silence, or mislabelled);
a NONSPEECH clip fails when too many do (speech leaking in). The detector runs as a child job
(core/hygiene_child.py) on a frozen manifest like an audit; the writer stores every clip's
fraction and frame scores (the Review tab draws them under the spectrogram) and queues the
failing clips with reason `vad_hygiene` and the fraction as their score.

A detector is not trusted everywhere: at -5 dB SNR WebRTC VAD calls most speech clips silent.
Clips are grouped by label and, when they carry one, by SNR (metadata snr_db); in a group
where fewer than min_pass_rate of the clips pass, the failures say more about the detector than
about the labels, so none of them is queued and the outcome names the group. A clip a person
already reviewed after an earlier hygiene run queued it is not queued again.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from core.config import HygieneConfig
from core.hygiene_child import VAD_FILE, HygieneJob
from core.run_folder import MANIFEST_FILE
from core.store import Store, StoreError
from pipelines.audit import AUDIT_ANNOTATOR, REVIEW_ACTIONS, SPLITS
from pipelines.child_process import run_child
from pipelines.finetune import freeze_manifest, new_run_id

REASON = "vad_hygiene"
SNR_COLUMN = "meta.snr_db"


@dataclasses.dataclass
class HygieneOutcome:
    run_id: str
    run_dir: Path
    status: str
    settings: HygieneConfig
    error: str | None = None
    measured: int = 0
    failed: int = 0
    queued: list[int] = dataclasses.field(default_factory=list)
    untrusted: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # groups the detector cannot judge
    skipped_reviewed: int = 0
    unreadable: int = 0

    def lines(self) -> list[str]:
        s = self.settings
        if self.status != "succeeded":
            return [f"hygiene {self.run_id} {self.status}: {self.error}"]
        lines = [f"hygiene {self.run_id}: {self.measured} clips measured with {s.vad_description()}; "
                 f"{self.failed} fail ({s.speech_label} < {s.speech_min:.0%} speech frames, "
                 f"{s.nonspeech_label} > {s.nonspeech_max:.0%}); {len(self.queued)} queued as {REASON}"]
        for group in self.untrusted:
            lines.append(f"  not judged: {group['group']}: only {group['pass_rate']:.0%} of {group['clips']} clips pass "
                         f"(< {s.min_pass_rate:.0%}): the detector cannot tell there")
        if self.skipped_reviewed:
            lines.append(f"  {self.skipped_reviewed} failing clips were already reviewed after an earlier hygiene run")
        if self.unreadable:
            lines.append(f"  {self.unreadable} clips could not be read")
        return lines


def hygiene(store: Store, *, settings: HygieneConfig | None = None, progress: bool = True,
            on_event: Callable[[dict[str, Any]], None] | None = None, **options: Any) -> HygieneOutcome:
    """Measure the session's speech and non-speech clips with a VAD and queue the ones it
    contradicts. options: HygieneConfig fields to change on settings (vad="silero",
    speech_min=0.6, ...), validated by HygieneConfig: a bad one raises ConfigError naming it."""
    settings = HygieneConfig.from_dict({**(settings or HygieneConfig()).to_dict(), **options}, prefix="hygiene.")
    job, run_dir, manifest = _prepare(store, settings)
    outcome = HygieneOutcome(run_id=job.run_id, run_dir=run_dir, status="running", settings=settings)
    store.set_run_status(job.run_id, "running")
    try:
        result = run_child(run_dir, module="core.hygiene_child", desc=f"hygiene: {settings.vad}", progress=progress,
                           on_event=on_event)
        outcome.status, outcome.error = result["status"], result.get("error")
        if outcome.status == "succeeded":
            outcome.unreadable = len(result.get("unreadable", {}))
            _ingest_and_queue(store, outcome, manifest, pd.read_parquet(run_dir / VAD_FILE))
    except Exception as exc:
        store.set_run_status(job.run_id, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    store.set_run_status(job.run_id, outcome.status, error=outcome.error, summary=_summary(outcome))
    return outcome


def _prepare(store: Store, settings: HygieneConfig) -> tuple[HygieneJob, Path, pd.DataFrame]:
    """Freeze the session's speech and non-speech clips (every split, quarantined ones too) into
    a new run folder and register the run. Refuses a session without both labels."""
    manifest, as_of = freeze_manifest(store, quarantined_in=SPLITS)
    manifest = manifest[manifest["parent_clip_id"].isna()]
    labels = set(manifest["label"])
    missing = [name for name in (settings.speech_label, settings.nonspeech_label) if name not in labels]
    if missing:
        raise StoreError(f"no usable clips labelled {' or '.join(missing)} in this session (labels: "
                         f"{', '.join(sorted(labels)) or 'none'}); set --speech-label / --nonspeech-label")
    manifest = manifest[manifest["label"].isin([settings.speech_label, settings.nonspeech_label])].reset_index(drop=True)
    run_id = new_run_id("hygiene")
    run_dir = Path(store.session_dir) / "runs" / run_id
    run_dir.mkdir(parents=True)
    manifest.to_parquet(run_dir / MANIFEST_FILE)
    job = HygieneJob(run_id=run_id, vad=settings.vad, options=settings.vad_options())
    job.save(run_dir)
    store.create_run(run_id, kind="hygiene", preset=None, config={"hygiene": settings.to_dict()}, parent_run_id=None,
                     manifest_decision_id=as_of, run_dir=run_dir)
    return job, run_dir, manifest


def _ingest_and_queue(store: Store, outcome: HygieneOutcome, manifest: pd.DataFrame, measured: pd.DataFrame) -> None:
    measured["frame_scores"] = measured["frame_scores"].map(lambda scores: [float(v) for v in scores])
    store.ingest_run_results(outcome.run_id, vad_measurements=measured)
    judged = judge(manifest.merge(measured[["clip_id", "fraction"]], on="clip_id"), outcome.settings)
    outcome.measured, outcome.failed = len(judged), int(judged["fails"].sum())
    outcome.untrusted = untrusted_groups(judged, outcome.settings)
    trusted = ~judged["group"].isin([g["group"] for g in outcome.untrusted])
    candidates = judged[judged["fails"] & trusted & ~judged["quarantined"]]
    fresh = candidates[~candidates["clip_id"].isin(_reviewed_after_hygiene(store))]
    outcome.skipped_reviewed = len(candidates) - len(fresh)
    if not fresh.empty:
        entries = pd.DataFrame({"clip_id": fresh["clip_id"], "method": REASON, "reason": fresh["why"],
                                "score": fresh["fraction"], "audit_run_id": outcome.run_id})
        store.raise_quarantine(entries, annotator=AUDIT_ANNOTATOR)
    outcome.queued = [int(c) for c in fresh["clip_id"]]


def judge(clips: pd.DataFrame, settings: HygieneConfig) -> pd.DataFrame:
    """clips (clip_id, label, fraction, optionally meta.snr_db) with fails, why and group added."""
    speech = clips["label"] == settings.speech_label
    fails = (speech & (clips["fraction"] < settings.speech_min)) | (~speech & (clips["fraction"] > settings.nonspeech_max))
    limit = [f"< {settings.speech_min:.0%}" if s else f"> {settings.nonspeech_max:.0%}" for s in speech]
    why = [f"{REASON}: {label} clip with {fraction:.0%} speech frames ({settings.vad}), {bound}"
           for label, fraction, bound in zip(clips["label"], clips["fraction"], limit)]
    snr = clips[SNR_COLUMN] if SNR_COLUMN in clips else pd.Series([None] * len(clips), index=clips.index)
    group = [label if pd.isna(level) else f"{label} at {float(level):g} dB" for label, level in zip(clips["label"], snr)]
    return clips.assign(fails=fails.to_numpy(), why=why, group=group)


def untrusted_groups(judged: pd.DataFrame, settings: HygieneConfig) -> list[dict[str, Any]]:
    """The groups where fewer than min_pass_rate of the clips pass, with their pass rate."""
    rates = judged.groupby("group", sort=True)["fails"].agg(clips="size", failing="sum")
    rates["pass_rate"] = 1 - rates["failing"] / rates["clips"]
    low = rates[rates["pass_rate"] < settings.min_pass_rate]
    return [{"group": name, "clips": int(row.clips), "pass_rate": float(row.pass_rate)} for name, row in low.iterrows()]


def _reviewed_after_hygiene(store: Store) -> set[int]:
    """Clips a person reviewed (and did not undo) after hygiene last queued them."""
    log = store.decisions()
    queued = log[(log["action"] == "quarantine") & log["note"].fillna("").str.startswith(REASON)]
    last_queued = queued.groupby("clip_id")["id"].max()
    reviews = log[log["action"].isin(REVIEW_ACTIONS) & ~log["undone"]]
    after = reviews["id"] > reviews["clip_id"].map(last_queued)
    return set(reviews.loc[after, "clip_id"].astype(int))


def _summary(outcome: HygieneOutcome) -> dict[str, Any]:
    return {"measured": outcome.measured, "failed": outcome.failed, "queued": len(outcome.queued),
            "untrusted": outcome.untrusted, "skipped_reviewed": outcome.skipped_reviewed,
            "unreadable": outcome.unreadable, "vad": outcome.settings.vad, "options": outcome.settings.vad_options(),
            "message": "; ".join(outcome.lines()[:1])}
