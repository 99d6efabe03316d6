"""AuditConfig is where audit options are validated, once: the pipeline, the CLI's flags and their
help all go through it."""
from __future__ import annotations

import re
import typing

import pytest

import app
from core.config import MIN_FOLDS, AuditConfig, ConfigError
from core.label_issues import LABEL_QUALITY_METHODS


def test_the_config_offers_exactly_the_ranking_methods_core_dispatches():
    assert typing.get_args(typing.get_type_hints(AuditConfig)["method"]) == tuple(LABEL_QUALITY_METHODS)


@pytest.mark.parametrize("options, message", [
    ({"folds": MIN_FOLDS - 1}, f"audit.folds: {MIN_FOLDS - 1} is out of range [{MIN_FOLDS}, inf]"),
    ({"folds": "five"}, "audit.folds: expected an integer, got 'five'"),
    ({"method": "entropy"}, "audit.method: 'entropy' is not one of 'self_confidence', 'normalized_margin'"),
    ({"max_queue_share": 1.5}, "audit.max_queue_share: 1.5 is out of range"),
])
def test_a_bad_option_is_refused_naming_it(options, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        AuditConfig.from_dict(options, prefix="audit.")


def test_the_audit_flags_read_their_help_defaults_and_choices_from_the_config(capsys):
    with pytest.raises(SystemExit):
        app.main(["audit", "--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    helps, defaults = AuditConfig.field_help(), AuditConfig().to_dict()
    for name in (*app.AUDIT_OPTIONS, *app.LABEL_ISSUE_OPTIONS):
        default = "none" if defaults[name] is None else defaults[name]
        assert f"--{name.replace('_', '-')}" in shown and f"{' '.join(helps[name].split())} (default {default})" in shown
    assert "--method {self_confidence,normalized_margin}" in shown


def test_an_unset_flag_leaves_the_default_to_the_config():
    args = app.build_parser().parse_args(["audit", "--folds", "3"])
    options = {name: getattr(args, name) for name in (*app.AUDIT_OPTIONS, *app.LABEL_ISSUE_OPTIONS)}
    assert options == {**dict.fromkeys(options), "folds": 3}
