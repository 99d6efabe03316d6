"""Agreement statistics and the multi-annotator consensus against values worked out by hand."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.agreement import ALL_CLASSES, agreement_table, confusion, pair_table, reliability_matrix, throughput
from core.consensus import consensus


def answers(by_unit: dict[str, tuple], names: tuple[str, ...] = ("ana", "ben")) -> pd.DataFrame:
    return pd.DataFrame([(unit, name, answer) for unit, given in by_unit.items()
                         for name, answer in zip(names, given) if answer is not None],
                        columns=["unit", "annotator", "answer"])


# ana: a a b b a c / ben: a b b b a b  -> 4 of 6 agree
TWO = answers({"u1": ("a", "a"), "u2": ("a", "b"), "u3": ("b", "b"), "u4": ("b", "b"), "u5": ("a", "a"),
               "u6": ("c", "b")})


def test_two_annotators_kappa_and_alpha_match_the_hand_computed_values():
    table = agreement_table(TWO).set_index("class")
    overall = table.loc[ALL_CLASSES]
    # kappa: po = 4/6, pe = (3*2 + 2*4 + 1*0) / 36 = 14/36 -> (24 - 14) / (36 - 14) = 5/11
    assert overall.kappa == pytest.approx(5 / 11)
    # alpha: 12 values, coincidences off the diagonal 4 -> Do = 4/12; n_a=5, n_b=6, n_c=1 ->
    # De = (2*5*6 + 2*5*1 + 2*6*1) / (12*11) = 82/132; alpha = 1 - Do/De = 19/41
    assert overall.alpha == pytest.approx(19 / 41)
    assert (overall.units, overall.observed) == (6, pytest.approx(4 / 6))
    # class a against the rest: ana T T F F T F, ben T F F F T F -> po 5/6, pe 1/2 -> kappa 2/3
    assert table.loc["a"].kappa == pytest.approx(2 / 3) and table.loc["a"].units == 3
    assert list(table.index) == [ALL_CLASSES, "a", "b", "c"]


def test_three_annotators_get_alpha_with_missing_answers_and_no_kappa():
    three = answers({"u1": ("a", "a", "a"), "u2": ("a", "b", "b"), "u3": ("b", "b", None), "u4": ("c", "b", "c")},
                    names=("ana", "ben", "cy"))
    overall = agreement_table(three).set_index("class").loc[ALL_CLASSES]
    # 11 values; off-diagonal coincidences 4 -> Do = 4/11; n_a=4, n_b=5, n_c=2 -> De = 76/110; alpha = 9/19
    assert overall.alpha == pytest.approx(9 / 19)
    assert np.isnan(overall.kappa)
    pairs = pair_table(three).set_index(["a", "b"])
    assert pairs.loc[("ana", "ben")].units == 4 and pairs.loc[("ben", "cy")].units == 3
    assert pairs.loc[("ana", "cy")].observed == pytest.approx(2 / 3)  # u1 a/a, u2 a/b, u4 c/c


def test_the_confusion_counts_each_pair_of_answers_and_lists_every_answer_both_ways():
    table = confusion(TWO, "ana", "ben")
    assert list(table.index) == list(table.columns) == ["a", "b", "c"]
    assert table.loc["a", "a"] == 2 and table.loc["a", "b"] == 1 and table.loc["c", "b"] == 1
    assert table.to_numpy().sum() == 6
    with pytest.raises(ValueError, match="shares no unit"):
        confusion(TWO, "ana", "zoe")


def test_undefined_statistics_are_nan_and_single_answers_are_left_out():
    same = answers({"u1": ("a", "a"), "u2": ("a", "a"), "u3": ("a", None)})
    overall = agreement_table(same).set_index("class").loc[ALL_CLASSES]
    assert overall.units == 2 and overall.observed == 1.0  # u3 had one answer: no agreement to measure
    assert np.isnan(overall.kappa) and np.isnan(overall.alpha)  # no variation: chance agreement is perfect too
    assert agreement_table(answers({"u1": ("a", None)})).empty
    with pytest.raises(ValueError, match="more than once"):
        reliability_matrix(pd.concat([TWO, TWO.head(1)]))


def test_consensus_with_a_model_follows_it_on_a_tie_and_ranks_the_careless_annotator_last():
    # ana and ben agree with each other and the model on most clips; cy answers the other class.
    classes = ["dog", "siren"]
    truth = ["dog", "siren", "dog", "siren", "dog", "siren", "dog", "siren"]
    rows = {}
    for i, label in enumerate(truth):
        other = "siren" if label == "dog" else "dog"
        rows[f"u{i}"] = (label, label if i != 0 else other, other if i % 4 else label)
    matrix = reliability_matrix(answers(rows, names=("ana", "ben", "cy")))
    probs = np.array([[0.9, 0.1] if label == "dog" else [0.1, 0.9] for label in truth])
    found = consensus(matrix, classes=classes, pred_probs=probs)
    assert found.units.consensus.tolist() == truth
    quality = found.annotators.quality
    assert quality.idxmin() == "cy" and quality["ana"] > quality["cy"] and quality["ben"] > quality["cy"]
    assert "CROWDLAB" in found.method
    # u0: ana dog, ben siren, cy dog -> a 2:1 majority; drop cy and it is a tie the model breaks (dog)
    tie = matrix[["ana", "ben"]]
    assert consensus(tie, classes=classes, pred_probs=probs).units.consensus.iloc[0] == "dog"


def test_consensus_without_a_model_is_the_majority_and_leaves_a_tie_to_a_person():
    two = reliability_matrix(TWO)
    found = consensus(two, classes=["a", "b", "c"], pred_probs=None)
    assert found.units.consensus.tolist() == ["a", None, "b", "b", "a", None]
    # quality without a model: agreement with the other annotator, 4 of 6 for both
    assert found.annotators.quality.tolist() == pytest.approx([4 / 6, 4 / 6])
    assert found.annotators.agreement.tolist() == pytest.approx([1.0, 1.0])  # on the four clips with a majority
    assert "no model" in found.method
    with pytest.raises(ValueError, match="two or more annotators"):
        consensus(reliability_matrix(TWO)[["ana"]], classes=["a", "b", "c"], pred_probs=None)


def test_throughput_counts_active_time_and_leaves_breaks_out():
    at = pd.Timestamp("2026-01-01 10:00:00")
    seconds = {"ana": [0, 30, 60, 90, 5 * 3600], "ben": [0, 30]}
    events = pd.DataFrame([(name, at + pd.Timedelta(seconds=s)) for name, times in seconds.items() for s in times],
                          columns=["annotator", "created_at"])
    pace = throughput(events).set_index("annotator")
    # the team's median gap is 30 s; ana's 5 h gap is a break: 3 gaps of 30 s + 2 stretches x 30 s = 150 s
    assert pace.loc["ana", "actions"] == 5 and pace.loc["ana", "active_h"] == pytest.approx(150 / 3600)
    assert pace.loc["ana", "per_hour"] == pytest.approx(5 / (150 / 3600))
    assert pace.loc["ben", "per_hour"] == pytest.approx(2 / (60 / 3600))
    assert throughput(events.head(0)).empty
