"""Agreement between annotators who answered the same clips blind: Cohen's kappa (scikit-learn)
when two people answered, Krippendorff's alpha (the `krippendorff` package, nominal) for any
number with missing answers, per class (one class against the rest) and overall; the confusion
between two annotators; and each annotator's pace.

Input is one row per answer: `unit` (what was answered: a clip in one annotation round),
`annotator` and `answer` (a class name, or a fixed word such as "(excluded)"). Every statistic
is 1 for perfect agreement, 0 for the agreement chance alone would give, below 0 for worse; it
is NaN where it is undefined (kappa with other than two annotators, alpha or kappa when every
answer is the same value, so chance agreement is already perfect).
"""
from __future__ import annotations

import itertools
import warnings

import krippendorff
import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score

ALL_CLASSES = "all classes"
ANSWER_COLUMNS = ("unit", "annotator", "answer")


def reliability_matrix(answers: pd.DataFrame) -> pd.DataFrame:
    """Units x annotators, each cell an answer or NaN; only units that two or more people
    answered (one answer says nothing about agreement). Raises ValueError on missing columns
    or on an annotator answering one unit twice."""
    missing = sorted(set(ANSWER_COLUMNS) - set(answers.columns))
    if missing:
        raise ValueError(f"answers: missing columns {missing}; expected {ANSWER_COLUMNS}")
    repeated = answers.duplicated(subset=["unit", "annotator"])
    if repeated.any():
        first = answers[repeated].iloc[0]
        raise ValueError(f"answers: {first.annotator} answered unit {first.unit!r} more than once")
    matrix = answers.pivot(index="unit", columns="annotator", values="answer")
    return matrix[matrix.notna().sum(axis=1) >= 2]


def agreement_table(answers: pd.DataFrame) -> pd.DataFrame:
    """One row for all classes, then one per class (that class against every other answer):
    class, units (answered by two or more; for a class, those where anyone gave it), observed
    (share of agreeing pairs of answers within a unit), kappa (only with exactly two annotators),
    alpha. Empty (with the columns) when no unit has two answers."""
    matrix = reliability_matrix(answers)
    columns = ["class", "units", "observed", "kappa", "alpha"]
    if matrix.empty:
        return pd.DataFrame(columns=columns)
    rows = [{"class": ALL_CLASSES, "units": len(matrix), **_statistics(matrix)}]
    for label in sorted(pd.unique(matrix.stack().dropna())):
        binary = matrix.where(matrix.isna(), matrix == label)
        rows.append({"class": label, "units": int((matrix == label).any(axis=1).sum()), **_statistics(binary)})
    return pd.DataFrame(rows, columns=columns)


def pair_table(answers: pd.DataFrame) -> pd.DataFrame:
    """Every pair of annotators who answered a unit in common: a, b, units, observed, kappa."""
    matrix = reliability_matrix(answers)
    rows = []
    for a, b in itertools.combinations(sorted(matrix.columns), 2):
        shared = matrix[[a, b]].dropna()
        if not shared.empty:
            rows.append({"a": a, "b": b, "units": len(shared), "observed": float((shared[a] == shared[b]).mean()),
                         "kappa": _kappa(shared[a], shared[b])})
    return pd.DataFrame(rows, columns=["a", "b", "units", "observed", "kappa"])


def confusion(answers: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """How a's answers (rows) met b's (columns) on the units both answered; every answer either
    gave is a row and a column."""
    matrix = reliability_matrix(answers)
    for name in (a, b):
        if name not in matrix.columns:
            raise ValueError(f"annotator {name!r} shares no unit with another; known: {', '.join(matrix.columns)}")
    shared = matrix[[a, b]].dropna()
    values = sorted(set(shared[a]) | set(shared[b]))
    table = pd.crosstab(shared[a], shared[b]).reindex(index=values, columns=values, fill_value=0)
    return table.rename_axis(index=f"{a} \\ {b}", columns=None)


def throughput(events: pd.DataFrame) -> pd.DataFrame:
    """Each annotator's pace from their actions (columns annotator, created_at): actions, first,
    last, active_h and per_hour. Active time adds up the gaps between one's consecutive actions,
    except gaps longer than a break: ten times the team's median gap (the session's own pace, not
    a fixed minute count); a stretch's first action counts one median gap. per_hour is NaN for
    fewer than two actions."""
    columns = ["annotator", "actions", "first", "last", "active_h", "per_hour"]
    if events.empty:
        return pd.DataFrame(columns=columns)
    events = events.sort_values("created_at")
    gaps = events.groupby("annotator").created_at.diff().dt.total_seconds()
    median = float(gaps.median()) if gaps.notna().any() else float("nan")
    rows = []
    for name, group in events.groupby("annotator", sort=True):
        own = gaps.loc[group.index].dropna()
        stretches = 1 + int((own > 10 * median).sum())
        active_s = float(own[own <= 10 * median].sum()) + stretches * median if len(group) > 1 else float("nan")
        rows.append({"annotator": name, "actions": len(group), "first": group.created_at.min(),
                     "last": group.created_at.max(), "active_h": active_s / 3600,
                     "per_hour": len(group) / (active_s / 3600) if active_s and active_s > 0 else float("nan")})
    return pd.DataFrame(rows, columns=columns)


def _statistics(matrix: pd.DataFrame) -> dict[str, float]:
    """observed, kappa and alpha of one reliability matrix (units x annotators)."""
    agreeing = pairs = 0
    for row in matrix.itertuples(index=False):
        given = [value for value in row if not pd.isna(value)]
        for x, y in itertools.combinations(given, 2):
            pairs += 1
            agreeing += x == y
    kappa = float("nan")
    if matrix.shape[1] == 2:
        shared = matrix.dropna()
        kappa = _kappa(shared.iloc[:, 0], shared.iloc[:, 1])
    return {"observed": agreeing / pairs if pairs else float("nan"), "kappa": kappa, "alpha": _alpha(matrix)}


def _kappa(a: pd.Series, b: pd.Series) -> float:
    """Cohen's kappa; NaN when undefined (fewer than two values between them)."""
    if len(a) == 0 or len(set(a) | set(b)) < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(cohen_kappa_score(a.astype(str), b.astype(str)))


def _alpha(matrix: pd.DataFrame) -> float:
    """Krippendorff's alpha, nominal: annotators x units of value codes, NaN where unanswered;
    NaN when every answer is the same value (the statistic is undefined there)."""
    values = pd.unique(matrix.stack().dropna().astype(str))
    if len(values) < 2:
        return float("nan")
    codes = {value: float(i) for i, value in enumerate(sorted(values))}
    data = matrix.apply(lambda column: column.map(lambda v: np.nan if pd.isna(v) else codes[str(v)])).to_numpy(float)
    return float(krippendorff.alpha(reliability_data=data.T, level_of_measurement="nominal"))
