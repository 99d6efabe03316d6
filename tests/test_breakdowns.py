"""Breakdowns by clip metadata: how each column groups the clips, and the numbers per group."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.breakdowns import MISSING_GROUP, describe, plan_breakdowns
from core.config import BreakdownBins, ConfigError, EvaluationConfig, load_preset

LABELS = ["alert_sounds", "emergency_sirens"]


def manifest(**columns) -> pd.DataFrame:
    return pd.DataFrame(columns)


def test_configured_cuts_bin_numbers_and_missing_values_form_their_own_group():
    frame = manifest(**{"meta.snr_db": [-3.0, 0.0, 4.9, 5.0, 25.0, np.nan]})
    plan = plan_breakdowns(frame, EvaluationConfig())
    (snr,) = plan.groupings
    assert (snr.column, snr.how, snr.unit) == ("snr_db", "bins", "dB")
    assert list(snr.groups) == ["< 0 dB", "0-5 dB", "0-5 dB", "5-10 dB", "≥ 20 dB", MISSING_GROUP]
    assert snr.order == ["< 0 dB", "0-5 dB", "5-10 dB", "≥ 20 dB", MISSING_GROUP]  # empty bins left out


def test_report_counts_accuracy_and_f1_per_group_by_hand():
    frame = manifest(**{"meta.recorder": ["a", "a", "a", "b", "b"]})
    y_true = np.array([0, 1, 1, 0, 1])
    y_pred = np.array([0, 1, 0, 1, 1])
    report = plan_breakdowns(frame, EvaluationConfig()).report(np.arange(5), y_true=y_true, y_pred=y_pred, labels=LABELS)
    groups = report["recorder"]["groups"]
    assert groups["a"]["n"] == 3 and groups["a"]["accuracy"] == pytest.approx(2 / 3)
    # group a: class 0 P=1/2 R=1 F1=2/3; class 1 P=1 R=1/2 F1=2/3 -> macro 2/3
    assert groups["a"]["f1_macro"] == pytest.approx(2 / 3)
    assert groups["b"] == {"n": 2, "accuracy": 0.5, "f1_macro": pytest.approx((0 + 2 / 3) / 2)}
    subset = plan_breakdowns(frame, EvaluationConfig()).report(np.array([3, 4]), y_true=y_true[3:], y_pred=y_pred[3:],
                                                              labels=LABELS)
    assert list(subset["recorder"]["groups"]) == ["b"]  # a split holding one group reports just that group


def test_unconfigured_numbers_group_by_value_when_few_else_by_rounded_quartiles():
    few = manifest(**{"meta.take": [1, 2, 2, 1, 3]}).astype(float)
    (take,) = plan_breakdowns(few, EvaluationConfig()).groupings
    assert take.how == "values" and take.order == ["1", "2", "3"] and list(take.groups) == ["1", "2", "2", "1", "3"]

    many = manifest(**{"meta.start_s": np.linspace(0.0, 40.0, 101)})
    (start,) = plan_breakdowns(many, EvaluationConfig()).groupings
    assert start.how == "quartiles" and start.order == ["< 10", "10-20", "20-30", "≥ 30"]
    assert pd.Series(start.groups).value_counts().to_dict() == {"< 10": 25, "10-20": 25, "20-30": 25, "≥ 30": 26}


def test_columns_that_cannot_say_anything_are_skipped_with_the_reason():
    frame = manifest(duration_s=[4.0, 4.5, 4.2], dataset=["demo"] * 3, **{
        "meta.clip_name": ["x1", "x2", "x3"], "meta.empty": [None, None, None]})
    plan = plan_breakdowns(frame, EvaluationConfig(breakdown_max_groups=2,
                                                   breakdown_columns=["duration_s", "dataset", "clip_name", "empty", "nope"]))
    assert plan.groupings == []
    assert plan.skipped == {"duration_s": "every clip is in one group (3-5 s)",
                            "dataset": "every clip is in one group (demo)",
                            "clip_name": "3 distinct values, more than evaluation.breakdown_max_groups (2)",
                            "empty": "no clip has a value", "nope": "no such metadata column on these clips"}


def test_identifiers_and_columns_that_mirror_the_label_are_skipped():
    frame = manifest(label=["a", "a", "b", "b"] * 5, **{
        "meta.fsID": np.arange(20) * 7.0, "meta.classID": [3.0, 3.0, 7.0, 7.0] * 5,
        "meta.salience": [1.0, 2.0] * 10})
    plan = plan_breakdowns(frame, EvaluationConfig())
    assert [g.column for g in plan.groupings] == ["salience"]
    assert plan.skipped["fsID"].startswith("20 distinct whole numbers: looks like an identifier")
    assert plan.skipped["classID"] == "mirrors the label one to one (the per-class metrics already show it)"


def test_chosen_columns_only_and_text_booleans_group_by_value():
    frame = manifest(duration_s=[1.5, 9.0], dataset=["a", "b"], **{"meta.esc10": ["True", "False"]})
    plan = plan_breakdowns(frame, EvaluationConfig(breakdown_columns=["esc10"]))
    assert [g.column for g in plan.groupings] == ["esc10"] and plan.groupings[0].order == ["False", "True"]


def test_describe_reads_as_one_line():
    entry = {"groups": {"0-5 dB": {"n": 6, "accuracy": 1 / 3}, "(none)": {"n": 29, "accuracy": 1.0}}}
    assert describe("snr_db", entry) == "snr_db: 0-5 dB 0.333 (n=6), (none) 1.000 (n=29)"


def test_evaluation_settings_are_validated_where_they_are_loaded():
    config = load_preset("demo-fast", ["evaluation.breakdown_bins=[{column: snr_db, cuts: [-5, 0, 5]}]"])
    assert config.evaluation.breakdown_bins == [BreakdownBins(column="snr_db", cuts=[-5.0, 0.0, 5.0])]
    with pytest.raises(ConfigError, match="cuts of 'snr_db' must be increasing"):
        load_preset("demo-fast", ["evaluation.breakdown_bins=[{column: snr_db, cuts: [5, 0]}]"])
    with pytest.raises(ConfigError, match="listed twice"):
        load_preset("demo-fast", ["evaluation.breakdown_bins=[{column: a, cuts: [1]}, {column: a, cuts: [2]}]"])
    with pytest.raises(ConfigError, match=r"evaluation.breakdown_max_groups: 1 is out of range"):
        load_preset("demo-fast", ["evaluation.breakdown_max_groups=1"])
