"""Near-duplicate leakage across splits (issue 17): the same recording in train and in test makes
the test score a memory test.

`find_duplicates()` freezes every usable clip (every split, quarantined ones too; not augmented
copies, which are their parent's duplicates by design), runs `python -m core.duplicates_child`
on them, and ingests what it found: each pair of clips above the session's own similarity
threshold, with both clips' splits, goes into the store (duplicate_pairs). A pair across splits
is a leakage candidate: the clip on the held-out side (test before val before train) goes to the
review queue with reason `near_duplicate` and its most similar partner, unless a person has
already said the two are not duplicates (core.duplicate_review), or it is open in the queue
already. A pair inside one split is a plain duplicate: counted and stored, not queued.
The report is the share of test (and val) clips with a near-duplicate in train.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from core.checkpoint import checkpoint_dir, has_checkpoint
from core.config import ConfigError, DuplicatesConfig
from core.duplicate_review import REASON, not_duplicate_pairs
from core.duplicates_child import PAIRS_FILE, DuplicatesJob
from core.run_folder import MANIFEST_FILE
from core.store import Store, StoreError
from pipelines.audit import AUDIT_ANNOTATOR, SPLITS
from pipelines.child_process import run_child
from pipelines.finetune import freeze_manifest, new_run_id

# Which side of a cross-split pair is queued: the held-out one, whose score the pair flatters.
HELD_OUT_RANK = {"train": 0, "val": 1, "test": 2}
REPORTED_SPLITS = ("test", "val")
# Below this chance of a planted copy being closer to its original than a clip to its nearest
# neighbour (0.5: no better than chance), the outcome warns that the embedding (an
# undertrained model's, say) cannot be relied on.
WEAK_EMBEDDING = 0.8


@dataclasses.dataclass
class DuplicatesOutcome:
    run_id: str
    run_dir: Path
    status: str
    settings: DuplicatesConfig
    embedding: str
    model_run_id: str | None = None
    error: str | None = None
    embedded: int = 0
    unreadable: int = 0
    pairs: int = 0
    cross_split: int = 0
    within_split: int = 0
    queued: list[int] = dataclasses.field(default_factory=list)
    skipped_verdict: int = 0      # pairs a person already said are not duplicates
    skipped_open: int = 0         # candidates already open in the review queue
    threshold: dict[str, Any] = dataclasses.field(default_factory=dict)
    leakage: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # split -> clips, with_train, share
    search: dict[str, Any] = dataclasses.field(default_factory=dict)

    def lines(self) -> list[str]:
        if self.status != "succeeded":
            return [f"duplicates {self.run_id} {self.status}: {self.error}"]
        source = f"model {self.model_run_id}" if self.model_run_id else "log-mel fingerprints"
        t = self.threshold
        lines = [f"duplicates {self.run_id}: {self.embedded} clips compared by {source}; "
                 f"{self.pairs} near-duplicate pairs ({self.cross_split} across splits, {self.within_split} within one); "
                 f"{len(self.queued)} queued as {REASON}",
                 f"  thresholds: embedding similarity >= {t['search']:.4f}, then frame-by-frame match >= "
                 f"{t['check']:.4f}; of {t['copies']} planted copies (gain up to {self.settings.copy_gain_db:g} dB, "
                 f"shift up to {self.settings.copy_shift_s:g} s) {t['copy_recall']:.0%} pass both, of as many "
                 f"clips' nearest neighbours {t['neighbour_share']:.1%}"]
        if t["separation"] < WEAK_EMBEDDING:
            lines.append(f"  warning: a planted copy is closer to its original than a clip to its nearest neighbour "
                         f"only {t['separation']:.0%} of the time: this embedding tells copies apart poorly"
                         + ("; try embedding logmel" if self.model_run_id else ""))
        for split, entry in self.leakage.items():
            lines.append(f"  {split}: {entry['with_train']} of {entry['clips']} clips ({entry['share']:.1%}) have a "
                         "near-duplicate in train")
        if self.skipped_verdict:
            lines.append(f"  {self.skipped_verdict} pairs were already judged not duplicates and are not raised again")
        if self.skipped_open:
            lines.append(f"  {self.skipped_open} candidates are already open in the review queue")
        if self.unreadable:
            lines.append(f"  {self.unreadable} clips could not be read")
        return lines

    def test_share(self) -> float | None:
        """The share of test clips with a near-duplicate in train (None without test clips)."""
        return self.leakage.get("test", {}).get("share")


def find_duplicates(store: Store, *, run_id: str | None = None, settings: DuplicatesConfig | None = None,
                    progress: bool = True, on_event: Callable[[dict[str, Any]], None] | None = None,
                    **options: Any) -> DuplicatesOutcome:
    """Search the session for near-duplicates and queue the cross-split ones; see the module
    docstring. run_id: the trained run whose model embeds the clips (default: production when
    the embedding is auto or model). options: DuplicatesConfig fields, validated there."""
    settings = DuplicatesConfig.from_dict({**(settings or DuplicatesConfig()).to_dict(), **options},
                                          prefix="duplicates.")
    model_run_id, checkpoint = _model(store, settings, run_id)
    job, run_dir, manifest = _prepare(store, settings, model_run_id, checkpoint)
    outcome = DuplicatesOutcome(run_id=job.run_id, run_dir=run_dir, status="running", settings=settings,
                                embedding=job.embedding, model_run_id=model_run_id)
    store.set_run_status(job.run_id, "running")
    try:
        result = run_child(run_dir, module="core.duplicates_child", desc=f"duplicates: {job.embedding}",
                           progress=progress, on_event=on_event)
        outcome.status, outcome.error = result["status"], result.get("error")
        if outcome.status == "succeeded":
            _ingest_and_queue(store, outcome, manifest, result, pd.read_parquet(run_dir / PAIRS_FILE))
    except Exception as exc:
        store.set_run_status(job.run_id, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    store.set_run_status(job.run_id, outcome.status, error=outcome.error, summary=_summary(outcome))
    return outcome


def _model(store: Store, settings: DuplicatesConfig, run_id: str | None) -> tuple[str | None, str | None]:
    """(the model's run id, its checkpoint folder), or (None, None) for log-mel fingerprints."""
    if settings.embedding == "logmel":
        if run_id:
            raise ConfigError(f"duplicates.embedding: logmel compares fingerprints, not a model; "
                              f"leave out --run {run_id} or choose embedding model")
        return None, None
    chosen = run_id or store.production_run()
    if chosen is None:
        if settings.embedding == "model":
            raise StoreError("no production model to embed clips with: name a trained run with --run, "
                             "or use embedding logmel")
        return None, None
    folder = checkpoint_dir(store.run(chosen)["run_dir"])  # an unknown run is refused here by name
    if not has_checkpoint(folder):
        raise StoreError(f"run {chosen} has no model checkpoint (a training or fine-tune run has one); "
                         "name another run, or use embedding logmel")
    return chosen, str(folder)


def _prepare(store: Store, settings: DuplicatesConfig, model_run_id: str | None,
             checkpoint: str | None) -> tuple[DuplicatesJob, Path, pd.DataFrame]:
    """Freeze every usable original clip into a new run folder and register the run; refuses a
    session with fewer than two clips to compare."""
    manifest, as_of = freeze_manifest(store, quarantined_in=SPLITS)
    manifest = manifest[manifest["parent_clip_id"].isna()].reset_index(drop=True)
    if len(manifest) < 2:
        raise StoreError(f"near-duplicates need at least 2 usable clips; this session has {len(manifest)}")
    run_id = new_run_id("duplicates")
    run_dir = Path(store.session_dir) / "runs" / run_id
    run_dir.mkdir(parents=True)
    manifest[["clip_id", "path", "split", "source_group"]].to_parquet(run_dir / MANIFEST_FILE)
    job = DuplicatesJob(run_id=run_id, embedding="model" if checkpoint else "logmel", checkpoint=checkpoint,
                        neighbours=settings.neighbours, calibration_clips=settings.calibration_clips,
                        copy_gain_db=settings.copy_gain_db, copy_shift_s=settings.copy_shift_s, seed=settings.seed)
    job.save(run_dir)
    store.create_run(run_id, kind="duplicates", preset=None, config={"duplicates": settings.to_dict()},
                     parent_run_id=model_run_id, manifest_decision_id=as_of, run_dir=run_dir)
    return job, run_dir, manifest


def _ingest_and_queue(store: Store, outcome: DuplicatesOutcome, manifest: pd.DataFrame, result: dict[str, Any],
                      pairs: pd.DataFrame) -> None:
    split = manifest.set_index("clip_id")["split"]
    pairs = pairs.assign(split_a=pairs["clip_a"].map(split).to_numpy(), split_b=pairs["clip_b"].map(split).to_numpy())
    store.ingest_duplicate_pairs(outcome.run_id, pairs)
    outcome.embedded, outcome.unreadable = int(result["embedded"]), len(result.get("unreadable", {}))
    outcome.threshold, outcome.pairs = result["threshold"], len(pairs)
    outcome.search = {k: result[k] for k in ("dims", "exact_search", "neighbours", "stage_seconds")}
    cross = pairs[pairs["split_a"] != pairs["split_b"]]
    outcome.cross_split, outcome.within_split = len(cross), len(pairs) - len(cross)
    readable = manifest[~manifest["path"].isin(result.get("unreadable", {}))]
    outcome.leakage = leakage_report(readable, cross)
    _queue(store, outcome, candidates(cross))


def candidates(cross: pd.DataFrame) -> pd.DataFrame:
    """One row per held-out clip of the cross-split pairs (clip_id, partner_id, similarity,
    split, partner_split), with its most similar partner, most similar first."""
    a_held = cross["split_a"].map(HELD_OUT_RANK) >= cross["split_b"].map(HELD_OUT_RANK)
    frame = pd.DataFrame({
        "clip_id": cross["clip_a"].where(a_held, cross["clip_b"]),
        "partner_id": cross["clip_b"].where(a_held, cross["clip_a"]),
        "similarity": cross["similarity"], "split": cross["split_a"].where(a_held, cross["split_b"]),
        "partner_split": cross["split_b"].where(a_held, cross["split_a"])})
    frame = frame.sort_values(["similarity", "clip_id"], ascending=[False, True])
    return frame.astype({"clip_id": "int64", "partner_id": "int64"}).reset_index(drop=True)


def _queue(store: Store, outcome: DuplicatesOutcome, found: pd.DataFrame) -> None:
    """Queue each candidate clip once, with its most similar partner not judged distinct."""
    judged = not_duplicate_pairs(store)
    fresh = ~pd.Series([frozenset((a, b)) in judged for a, b in zip(found["clip_id"], found["partner_id"])],
                       index=found.index, dtype=bool)
    outcome.skipped_verdict = int((~fresh).sum())
    found = found[fresh].drop_duplicates("clip_id")
    state = store.labels().set_index("clip_id")
    open_now = found["clip_id"].map(state["quarantined"]).fillna(False).astype(bool)
    outcome.skipped_open = int(open_now.sum())
    found = found[~open_now]
    if not found.empty:
        reasons = [f"{REASON}: {split} clip, similarity {sim:.3f} to {partner_split} clip {partner}"
                   for split, sim, partner_split, partner in
                   zip(found["split"], found["similarity"], found["partner_split"], found["partner_id"])]
        store.raise_quarantine(pd.DataFrame({"clip_id": found["clip_id"], "method": REASON, "reason": reasons,
                                             "score": found["similarity"], "audit_run_id": outcome.run_id}),
                               annotator=AUDIT_ANNOTATOR)
    outcome.queued = [int(c) for c in found["clip_id"]]


def leakage_report(manifest: pd.DataFrame, cross: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """For test and val: how many of their clips (manifest: clip_id, split) have a near-duplicate
    in train (cross: pairs clip_a, clip_b, split_a, split_b), and the share."""
    report = {}
    held_with_train = [(int(clip), split) for clip, split, other in
                       [*zip(cross["clip_a"], cross["split_a"], cross["split_b"]),
                        *zip(cross["clip_b"], cross["split_b"], cross["split_a"])] if other == "train"]
    for split in REPORTED_SPLITS:
        clips = set(manifest.loc[manifest["split"] == split, "clip_id"].astype(int))
        if not clips:
            continue
        with_train = {clip for clip, held in held_with_train if held == split}
        report[split] = {"clips": len(clips), "with_train": len(with_train & clips),
                         "share": len(with_train & clips) / len(clips)}
    return report


def _summary(outcome: DuplicatesOutcome) -> dict[str, Any]:
    return {"embedding": outcome.embedding, "model_run_id": outcome.model_run_id, "embedded": outcome.embedded,
            "pairs": outcome.pairs, "cross_split": outcome.cross_split, "within_split": outcome.within_split,
            "queued": len(outcome.queued), "skipped_verdict": outcome.skipped_verdict,
            "skipped_open": outcome.skipped_open, "threshold": outcome.threshold, "leakage": outcome.leakage,
            "test_share_with_train_duplicate": outcome.test_share(), "unreadable": outcome.unreadable,
            "search": outcome.search, "message": "; ".join(outcome.lines()[:1])}
