"""Who signs a decision in the workbench: the login when there is one, else the typed name."""
from __future__ import annotations

import gradio as gr
import pytest
from gradio.helpers import special_args

from workbench.context import Workbench, require_annotator
from workbench.server import build_app


def test_with_a_login_the_logged_in_user_signs_whatever_the_name_box_says():
    assert require_annotator("mallory", gr.Request(username="dora")) == "dora"
    assert require_annotator("", gr.Request(username="dora")) == "dora"


def test_without_a_login_the_typed_name_signs_and_a_blank_is_refused():
    assert require_annotator("  ana ", gr.Request()) == "ana"
    assert require_annotator("ana", None) == "ana"
    with pytest.raises(ValueError, match="Enter your name"):
        require_annotator("  ", gr.Request())


def test_every_handler_given_the_name_box_also_gets_the_login(tmp_path):
    """A handler that reads the name box signs something: Gradio must hand it the request too,
    or a login would not be the annotator. (The box's own change event only remembers the name.)"""
    wb = Workbench.open(tmp_path / "session")
    try:
        app = build_app(wb)
        box = next(block for block in app.blocks.values() if getattr(block, "elem_id", None) == "em-annotator")
        signing = [fn for fn in app.fns.values() if box in fn.inputs and (box._id, "change") not in fn.targets]
        assert len(signing) >= 8  # Review, Confusions, Train, Runs, and the gate panels of Train and Runs
        for fn in signing:
            inputs, marker = [None] * len(fn.inputs), object()
            special_args(fn.fn, inputs, request=marker)
            assert marker in inputs, f"{fn.name} reads the name box but is not given the request"
    finally:
        wb.store.close()
