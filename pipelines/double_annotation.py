"""Blind double annotation: a review queue set to N annotators per clip shows each clip to N
people, none of whom sees another's answer until all N have answered.

- An answer in such a queue is a blind annotation (the store's `annotations` log), not a
  decision: the clip's label, history and queue state do not change, so the next annotator sees
  the clip exactly as the first did. A queue shows each annotator only the clips they have not
  answered in the current round, and not those whose round is full.
- When the N-th answer arrives and all agree, one ordinary decision settles the clip, signed
  CONSENSUS and naming the annotations in its note. When they disagree the clip waits in the
  ADJUDICATION queue; an adjudicator (someone who did not answer it) decides with an ordinary
  decision whose note names every earlier answer. Either decision is linked to the annotations
  it settled, and undoing it opens the round again.
- Agreement (core.agreement) and consensus (core.consensus, cleanlab) are computed over the
  rounds every annotator of has answered; open rounds never show.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core import agreement
from core.checkpoint import checkpoint_dir, checkpoint_labels, has_checkpoint
from core.consensus import Consensus, consensus
from core.review import decision_fields
from core.store import Store
from pipelines.audit import CROSSVAL_DIR, LABEL_ISSUES_FILE
from pipelines.review_queue import QUEUE_COLUMNS, SOURCES, build_queue, default_run

ADJUDICATION = "adjudication"  # the review queue of clips whose annotators disagree
CONSENSUS = "consensus"        # who signs the decision that settles a clip its annotators agree on
EXCLUDED = "(excluded)"        # the answer of an annotation that excludes the clip


# --- the setting ---------------------------------------------------------------------------
def annotators_per_clip(store: Store, queue: str) -> int:
    """How many people answer each clip of a review queue (1 unless it was set)."""
    modes = store.annotation_modes().set_index("queue")
    return int(modes.annotators.get(queue, 1))


def set_annotators_per_clip(store: Store, *, queue: str, annotators: int, actor: str) -> str:
    """Set a review queue to `annotators` blind answers per clip (1: back to one decision)."""
    if queue not in SOURCES:
        raise ValueError(f"queue must be one of {', '.join(SOURCES)}, got {queue!r}")
    store.set_annotation_mode(queue, annotators=annotators, set_by=actor)
    if annotators == 1:
        return f"queue {queue}: one annotator per clip (decisions take effect at once)"
    return (f"queue {queue}: {annotators} annotators per clip, blind; a clip they disagree on goes to the "
            f"{ADJUDICATION} queue")


# --- answering blind -----------------------------------------------------------------------
def open_annotations(store: Store, *, clip_id: int | None = None) -> pd.DataFrame:
    """Annotations not withdrawn and not settled: the rounds in progress or awaiting adjudication."""
    rows = store.annotations(clip_id=clip_id)
    return rows[~rows.withdrawn & rows.settled_by.isna()].reset_index(drop=True)


class ViewerNeeded(ValueError):
    """A blind queue was asked for without saying who is looking."""


def queue_for(store: Store, *, source: str, viewer: str | None, run_id: str | None = None, label: str | None = None,
              status: str = "open", annotator: str | None = None, blind: bool = True) -> pd.DataFrame:
    """A review queue (QUEUE_COLUMNS) as `viewer` may see it: the ADJUDICATION queue, or a
    review_queue.build_queue source, which in a blind queue hides what visible_queue hides.
    blind=False skips that filter, for refreshing rows of clips the viewer was already shown."""
    if source != ADJUDICATION:
        queue = build_queue(store, source=source, run_id=run_id, label=label, status=status, annotator=annotator)
        return visible_queue(store, queue, source=source, viewer=viewer) if blind else queue
    queue = adjudication_queue(store, run_id=run_id, status=status)
    if label:
        queue = queue[(queue.label == label) | (queue.given == label)]
    if annotator:
        queue = queue[queue.last_annotator == annotator]
    return queue.reset_index(drop=True)


def visible_queue(store: Store, queue: pd.DataFrame, *, source: str, viewer: str | None) -> pd.DataFrame:
    """The rows of a review queue one annotator may answer: in a blind queue, not the clips they
    answered this round nor those whose round is full. Raises ViewerNeeded without a viewer there."""
    required = annotators_per_clip(store, source)
    if required < 2:
        return queue
    if not viewer:
        raise ViewerNeeded(f"Enter your name (top right), then load the queue: {source} is answered blind by "
                         f"{required} annotators, and each sees only the clips they have not answered.")
    rows = open_annotations(store)
    full = rows.groupby("clip_id").annotator.nunique() >= required
    hidden = set(rows.clip_id[rows.annotator == viewer]) | set(full[full].index)
    return queue[~queue.clip_id.isin(hidden)].reset_index(drop=True)


def annotate(store: Store, clip_id: int, *, queue: str, annotator: str, action: str, tag: str | None = None,
             label: str | None = None, note: str | None = None) -> str:
    """Record one blind answer; settle the clip when it completes an agreeing round. Returns
    what happened, in one line that reveals nothing of the other answers before the round is full."""
    required = annotators_per_clip(store, queue)
    if required < 2:
        raise ValueError(f"queue {queue} is not answered blind; decide the clip as usual")
    if action == "keep":
        raise ValueError("In a blind queue, answer with a class (tag, relabel) or exclude: the second opinion is "
                         "built in, so 'keep quarantined' is not an answer.")
    rows = open_annotations(store, clip_id=clip_id)
    if annotator in set(rows.annotator):
        raise ValueError(f"clip {clip_id}: you already answered it this round (U withdraws your last answer)")
    if rows.annotator.nunique() >= required:
        raise ValueError(f"clip {clip_id} already has its {required} answers; it waits in the {ADJUDICATION} queue")
    fields = decision_fields(store, clip_id, action=action, tag=tag, label=label)
    store.record_annotation(clip_id, queue=queue, annotator=annotator, note=note, **fields)
    rows = open_annotations(store, clip_id=clip_id)
    answered = f"clip {clip_id}: answered {answer_of(fields)} blind ({rows.annotator.nunique()} of {required})"
    if rows.annotator.nunique() < required:
        return answered
    settled = _settle_if_agreed(store, clip_id, rows)
    if settled is None:
        return f"{answered}; the annotators disagree: it goes to the {ADJUDICATION} queue"
    return f"{answered}; all agree: {answer_of(fields)} (decision {settled}, signed {CONSENSUS})"


def answer_of(fields: dict[str, Any] | pd.Series) -> str:
    """What an annotation says the clip is: its class, or EXCLUDED."""
    excluded = fields.get("set_excluded")
    return EXCLUDED if not pd.isna(excluded) and bool(excluded) else str(fields.get("new_label"))


def _settle_if_agreed(store: Store, clip_id: int, rows: pd.DataFrame) -> int | None:
    """The consensus decision's id when every answer of the round is the same, else None. The
    decision repeats the answers' own fields when they are identical (the same tag keeps its
    rule's quarantine choice), else the plain relabel or exclude the common answer means."""
    answers = rows.apply(answer_of, axis=1)
    if answers.nunique() != 1:
        return None
    columns = ["action", "tag", "rule", "new_label", "set_excluded", "set_quarantined"]
    same = rows[columns].astype(object).where(rows[columns].notna(), None).drop_duplicates()
    if len(same) == 1:
        fields = same.iloc[0].to_dict()
    elif answers.iloc[0] == EXCLUDED:
        fields = decision_fields(store, clip_id, action="exclude")
    else:
        fields = decision_fields(store, clip_id, action="relabel", label=answers.iloc[0])
    return store.record_resolution(clip_id, kind="consensus", annotation_ids=rows.id.tolist(), annotator=CONSENSUS,
                                   note=f"consensus of {_named(rows)}", **fields)


def _named(rows: pd.DataFrame) -> str:
    """The answers of a round as the settling decision's note names them: '#12 ana: siren, ...'."""
    return ", ".join(f"#{int(r.id)} {r.annotator}: {answer_of(r)}" for _, r in rows.iterrows())


def withdraw_last(store: Store, *, annotator: str) -> tuple[str, int]:
    """Withdraw the annotator's latest open answer (the U key in a blind queue): (message, clip id)."""
    rows = open_annotations(store)
    own = rows[rows.annotator == annotator]
    if own.empty:
        raise ValueError(f"{annotator} has no open answer to withdraw (a settled clip is undone in its decision)")
    last = own.iloc[-1]
    store.withdraw_annotation(int(last.id), annotator=annotator)
    return f"withdrew your answer {answer_of(last)} on clip {int(last.clip_id)}", int(last.clip_id)


# --- adjudication --------------------------------------------------------------------------
def adjudication_queue(store: Store, *, run_id: str | None = None, status: str = "open") -> pd.DataFrame:
    """Clips whose round is full but unsettled (open), or that an adjudicator settled (resolved),
    with QUEUE_COLUMNS: the reason lists every answer and the consensus suggestion (cleanlab),
    score is the consensus quality (0..1; lower = more doubtful). Oldest full round first."""
    every = rounds(store)
    units = every
    if status == "open":
        units = units[units.settled_by.isna()]
    elif status == "resolved":
        adjudicated = store.annotation_resolutions().query("kind == 'adjudicated' and not undone").decision_id
        units = units[units.settled_by.isin(adjudicated)]
    elif status != "all":
        raise ValueError(f"status must be open, resolved or all, got {status!r}")
    if units.empty:
        return pd.DataFrame(columns=QUEUE_COLUMNS)
    suggestion = _consensus_or_none(store, every)
    state = store.labels().set_index("clip_id")
    run_id = run_id or default_run(store)
    predicted = (store.predictions(run_id).set_index("clip_id")[["predicted", "confidence"]] if run_id
                 else pd.DataFrame(columns=["predicted", "confidence"]))
    rows = []
    for unit, group in units.groupby("unit", sort=False):
        clip_id = int(group.clip_id.iloc[0])
        reason = " · ".join(f"{r.annotator}: {answer_of(r)}" for _, r in group.iterrows())
        score = np.nan
        if suggestion is not None and unit in suggestion.units.index:
            hint = suggestion.units.loc[unit]
            score = float(hint.quality)
            suggested = hint.consensus if isinstance(hint.consensus, str) else "tie"
            reason += f" · consensus: {suggested} ({score:.2f})"
        settled = group.settled_by.iloc[0]
        rows.append({"clip_id": clip_id, "file": state.path.get(clip_id), "given": state.original_label.get(clip_id),
                     "label": state.label.get(clip_id), "predicted": predicted.predicted.get(clip_id),
                     "confidence": predicted.confidence.get(clip_id), "reason": reason, "score": score,
                     "status": "open" if pd.isna(settled) else "resolved",
                     "last_annotator": None if pd.isna(settled) else _signer(store, int(settled))})
    return pd.DataFrame(rows).reindex(columns=QUEUE_COLUMNS).drop_duplicates("clip_id").reset_index(drop=True)


def adjudicate(store: Store, clip_id: int, *, adjudicator: str, action: str, tag: str | None = None,
               label: str | None = None, note: str | None = None) -> str:
    """Settle a clip its annotators disagree on: an ordinary decision (tag, relabel, exclude,
    keep) by someone who did not answer it, whose note names every earlier answer."""
    rows = open_annotations(store, clip_id=clip_id)
    full = rounds(store)
    if rows.empty or clip_id not in set(full.clip_id[full.settled_by.isna()]):
        raise ValueError(f"clip {clip_id} has no full round of answers waiting for adjudication; load the queue again")
    if adjudicator in set(rows.annotator):
        raise ValueError(f"{adjudicator} answered clip {clip_id}; someone who did not answer it adjudicates it")
    fields = decision_fields(store, clip_id, action=action, tag=tag, label=label)
    text = f"adjudicated {_named(rows)}" + (f"; {note}" if note else "")
    decision_id = store.record_resolution(clip_id, kind="adjudicated", annotation_ids=rows.id.tolist(),
                                          annotator=adjudicator, note=text, **fields)
    verdict = answer_of(fields) if action != "keep" else "kept in quarantine"
    return f"clip {clip_id}: adjudicated {verdict} (decision {decision_id}, over {_named(rows)})"


def _signer(store: Store, decision_id: int) -> str | None:
    log = store.decisions(since_id=decision_id - 1, limit=None)
    match = log[log.id == decision_id]
    return None if match.empty else str(match.annotator.iloc[0])


# --- rounds, agreement and consensus ---------------------------------------------------------
def rounds(store: Store) -> pd.DataFrame:
    """The annotations of every full round, one row per answer, with `unit` ('clip/decision' for
    a settled round, 'clip/open' for one awaiting adjudication): settled rounds, and open rounds
    with as many annotators as their queue asks (two at least). Rounds in progress never show."""
    rows = store.annotations()
    rows = rows[~rows.withdrawn].copy()
    if rows.empty:
        return rows.assign(unit=pd.Series(dtype=str))
    settled = rows.settled_by.notna()
    rows["unit"] = rows.clip_id.astype(str) + "/" + rows.settled_by.astype("Int64").astype(str).where(settled, "open")
    required = {queue: max(2, annotators_per_clip(store, queue)) for queue in rows.queue.unique()}
    open_rows = rows[~settled]
    needed = open_rows.groupby("clip_id").queue.first().map(required).astype(int)
    full = open_rows.groupby("clip_id").annotator.nunique() >= needed
    keep = settled | rows.clip_id.isin(full[full].index)
    return rows[keep].reset_index(drop=True)


@dataclass(frozen=True)
class AgreementReport:
    """What the CLI prints and the Review tab's agreement panel shows."""
    table: pd.DataFrame       # core.agreement.agreement_table
    pairs: pd.DataFrame       # core.agreement.pair_table
    confusion: pd.DataFrame   # between the pair with the most clips in common (empty without one)
    annotators: pd.DataFrame  # consensus quality per annotator (empty when cleanlab had too little)
    throughput: pd.DataFrame  # per annotator: decisions, blind answers, adjudications, pace
    consensus_method: str

    def lines(self) -> list[str]:
        def block(title: str, frame: pd.DataFrame) -> list[str]:
            return [title, frame.to_string(index=False, float_format=lambda v: f"{v:.3f}") if not frame.empty else "  (none)", ""]
        return [*block("Agreement (full rounds; kappa with exactly two annotators, Krippendorff's alpha nominal):",
                       self.table),
                *block("Pairs of annotators:", self.pairs),
                *block("Confusion between the pair with the most clips in common (rows \\ columns):",
                       self.confusion.reset_index() if not self.confusion.empty else self.confusion),
                *block(f"Annotator quality ({self.consensus_method}):", self.annotators),
                *block("Throughput:", self.throughput)]


def agreement_report(store: Store) -> AgreementReport:
    """Agreement, pairs, the busiest pair's confusion, annotator quality and throughput."""
    units = rounds(store)
    answers = pd.DataFrame({"unit": units.unit, "annotator": units.annotator,
                            "answer": [answer_of(r) for _, r in units.iterrows()]})
    pairs = agreement.pair_table(answers)
    matrix_confusion = pd.DataFrame()
    if not pairs.empty:
        top = pairs.sort_values("units", ascending=False).iloc[0]
        matrix_confusion = agreement.confusion(answers, top.a, top.b)
    found = _consensus_or_none(store, units)
    quality = (found.annotators.reset_index() if found is not None
               else pd.DataFrame(columns=["annotator", "quality", "agreement", "units", "worst_class"]))
    method = found.method if found is not None else "cleanlab needs two annotators who answered the same clip"
    return AgreementReport(table=agreement.agreement_table(answers), pairs=pairs, confusion=matrix_confusion,
                           annotators=quality, throughput=throughput(store), consensus_method=method)


def _consensus_or_none(store: Store, units: pd.DataFrame) -> Consensus | None:
    """cleanlab's consensus over the full rounds, with the production model's predictions when
    there is a production model with a checkpoint (else without a model, see core.consensus)."""
    if units.empty:
        return None
    answers = pd.DataFrame({"unit": units.unit, "annotator": units.annotator,
                            "answer": [answer_of(r) for _, r in units.iterrows()]})
    matrix = agreement.reliability_matrix(answers)
    clip_of = units.groupby("unit").clip_id.first()
    model = _production_probs(store)
    if model is None:
        classes = sorted({a for a in answers.answer if a != EXCLUDED})
        probs = None
    else:
        classes, by_clip = model
        uniform = np.full(len(classes), 1 / len(classes))  # a clip the model did not predict: no opinion
        probs = np.stack([np.asarray(by_clip.get(int(clip_of[unit]), uniform), dtype=float) for unit in matrix.index])
    try:
        return consensus(matrix, classes=classes, pred_probs=probs)
    except ValueError:
        return None


def _production_probs(store: Store) -> tuple[list[str], dict[int, np.ndarray]] | None:
    """The production model's classes and its probabilities per clip, or None without one. The
    model learnt its training clips' given labels, so for those its own probabilities echo the
    label under dispute: where an audit of it cross-validated the clip (the label-issue ranking),
    that out-of-fold probability is used instead."""
    run_id = store.production_run()
    if run_id is None:
        return None
    folder = checkpoint_dir(store.run(run_id)["run_dir"])
    if not has_checkpoint(folder):
        return None
    classes = checkpoint_labels(folder)
    predictions = store.predictions(run_id)
    by_clip = dict(zip(predictions.clip_id.astype(int), predictions.probs))
    ranked = _latest_out_of_fold(store, run_id)
    return classes, by_clip if ranked is None else {**by_clip, **out_of_fold_probs(ranked, classes)}


def _latest_out_of_fold(store: Store, run_id: str) -> pd.DataFrame | None:
    """The label-issue ranking (clip_id, label, probs) of the newest audit of run_id that made one."""
    audits = store.runs(kind="audit")
    for row in audits[(audits.status == "succeeded") & (audits.parent_run_id == run_id)].itertuples():
        path = Path(row.run_dir) / CROSSVAL_DIR / LABEL_ISSUES_FILE
        if path.is_file():
            return pd.read_parquet(path, columns=["clip_id", "label", "probs"])
    return None


def out_of_fold_probs(ranked: pd.DataFrame, classes: list[str]) -> dict[int, np.ndarray]:
    """A label-issue ranking's out-of-fold probabilities per clip, its columns (the pool's labels,
    sorted, as the audit cross-validated them) put in `classes` order; empty when the pool's
    classes are not the model's, which then has no opinion to borrow."""
    pool = sorted(ranked.label.unique())
    if set(pool) != set(classes):
        return {}
    order = [pool.index(label) for label in classes]
    return {int(clip): np.asarray(probs, dtype=float)[order] for clip, probs in zip(ranked.clip_id, ranked.probs)}


def throughput(store: Store) -> pd.DataFrame:
    """Per person: decisions (reviewing actions in the log), blind answers, adjudications, and
    their pace over all of them (core.agreement.throughput)."""
    log = store.decisions()
    log = log[log.action.isin(["tag", "relabel", "exclude", "include", "keep", "move"]) & (log.annotator != CONSENSUS)]
    answers = store.annotations()
    resolutions = store.annotation_resolutions()
    adjudicated = log[log.id.isin(resolutions.decision_id[resolutions.kind == "adjudicated"])]
    events = pd.concat([log[["annotator", "created_at"]], answers[["annotator", "created_at"]]], ignore_index=True)
    pace = agreement.throughput(events)
    if pace.empty:
        return pace
    counts = pd.DataFrame({"decisions": log.groupby("annotator").size(),
                           "blind_answers": answers.groupby("annotator").size(),
                           "adjudications": adjudicated.groupby("annotator").size()}).fillna(0).astype(int)
    pace = pace.merge(counts, left_on="annotator", right_index=True, how="left")
    return pace[["annotator", "decisions", "blind_answers", "adjudications", "per_hour", "active_h", "last"]]
