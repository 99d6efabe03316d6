"""A consensus label per clip and a quality score per annotator from several people's answers:
cleanlab's multi-annotator CROWDLAB (`get_label_quality_multiannotator`).

CROWDLAB weighs each annotator's answers by how often they agree with the others and with a
model, so it needs the model's predicted probabilities for the clips: the production model's
(pipelines/double_annotation.py). Without a model there is nothing to weigh the annotators
against, so the consensus is cleanlab's majority vote and an annotator's quality is their
agreement with the other annotators (cleanlab's "agreement" quality); a tie of a majority vote
is left unbroken (consensus None), for a person to decide, instead of cleanlab's random pick.

Only answers that are one of the model's classes take part (an "(excluded)" answer names no
class): a unit with no such answer, or an annotator with none, is left out.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from cleanlab.multiannotator import get_label_quality_multiannotator


@dataclass(frozen=True)
class Consensus:
    """units: index unit; consensus (class or None), quality (0..1, higher = more likely right),
    agreement (share of its annotators who gave the consensus). annotators: index annotator;
    quality (0..1, higher = better), agreement (with the consensus), units, worst_class.
    method: how it was reached, in words."""
    units: pd.DataFrame
    annotators: pd.DataFrame
    method: str


def consensus(matrix: pd.DataFrame, *, classes: list[str], pred_probs: np.ndarray | None) -> Consensus:
    """matrix: units x annotators of answers (core.agreement.reliability_matrix); classes: the
    model's classes in probability-column order; pred_probs: units x classes in matrix's row
    order, or None without a model. Raises ValueError when cleanlab has too little to go on
    (fewer than two annotators sharing a clip)."""
    if not classes:
        raise ValueError("classes: at least one class is needed")
    if pred_probs is not None and pred_probs.shape != (len(matrix), len(classes)):
        raise ValueError(f"pred_probs: shape {pred_probs.shape}, expected {(len(matrix), len(classes))}")
    index = {label: float(i) for i, label in enumerate(classes)}
    codes = matrix.apply(lambda column: column.map(lambda v: index.get(v, np.nan))).astype(float)
    keep_rows = codes.notna().any(axis=1).to_numpy()
    codes = codes[keep_rows]
    codes = codes.loc[:, codes.notna().any(axis=0)]
    if codes.shape[1] < 2 or not (codes.notna().sum(axis=1) >= 2).any():
        raise ValueError("consensus needs two or more annotators who answered the same clip with one of the "
                         f"model's classes ({', '.join(classes)})")
    probs = pred_probs[keep_rows] if pred_probs is not None else np.full((len(codes), len(classes)), 1 / len(classes))
    kwargs = ({"consensus_method": "best_quality", "quality_method": "crowdlab"} if pred_probs is not None
              else {"consensus_method": "majority_vote", "quality_method": "agreement"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab warns on small inputs; the method line says what was done
        result = get_label_quality_multiannotator(codes, probs, verbose=False, **kwargs)
    quality = result["label_quality"]
    labels = [classes[int(code)] for code in quality.consensus_label]
    if pred_probs is None:
        labels = [None if _tied(row) else label for row, label in zip(codes.to_numpy(), labels)]
    units = pd.DataFrame({"consensus": pd.Series(labels, index=codes.index, dtype=object), "quality": quality.consensus_quality_score.to_numpy(float),
                          "agreement": quality.annotator_agreement.to_numpy(float)}, index=codes.index)
    stats = result["annotator_stats"]
    annotators = pd.DataFrame({"quality": stats.annotator_quality.astype(float),
                               "agreement": stats.agreement_with_consensus.astype(float),
                               "units": stats.num_examples_labeled.astype(int),
                               "worst_class": [classes[int(c)] for c in stats.worst_class]}, index=stats.index)
    if pred_probs is None:  # cleanlab broke the ties to score these; score against what is known instead
        answered = matrix[keep_rows].loc[:, annotators.index]
        annotators["quality"] = [_agreement_with_others(answered, name) for name in annotators.index]
        target = units.consensus.dropna()
        annotators["agreement"] = [_share_equal(answered.loc[target.index, name].dropna(), target)
                                   for name in annotators.index]
    method = ("cleanlab CROWDLAB with the model's predictions" if pred_probs is not None else
              "no model: cleanlab majority vote (ties left to a person), quality = agreement with the others")
    return Consensus(units=units, annotators=annotators.rename_axis("annotator"), method=method)


def _agreement_with_others(matrix: pd.DataFrame, name: str) -> float:
    """Share of name's answers that each other annotator of the same unit matched (pairs counted)."""
    others = matrix.drop(columns=name)
    own = matrix[name]
    same = others.eq(own, axis=0)[others.notna() & own.notna().to_numpy()[:, None]]
    counted = (others.notna() & own.notna().to_numpy()[:, None]).to_numpy().sum()
    return float(same.sum().sum() / counted) if counted else float("nan")


def _share_equal(given: pd.Series, target: pd.Series) -> float:
    return float((given == target.loc[given.index]).mean()) if len(given) else float("nan")


def _tied(codes: np.ndarray) -> bool:
    """Whether the most frequent answers of a unit tie."""
    _, counts = np.unique(codes[~np.isnan(codes)], return_counts=True)
    return len(counts) > 1 and (counts == counts.max()).sum() > 1
