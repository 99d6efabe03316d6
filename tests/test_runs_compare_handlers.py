"""The Runs tab's detector comparison without a browser: Compare detectors on a tiny real speech
session (eSpeak NG speech, a speech-cnn run trained once by the real trainer: the module fixture of
test_detector_comparison), the comparison run it opens and its report view, and the refusals."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import copy_session
from core.config import ComparisonConfig
from core.store import Store
from pipelines.detector_comparison import KIND
from test_detector_comparison import QUICK, imported_session, trained_session  # noqa: F401 (module fixtures)
from workbench import runs_handlers, runs_views
from workbench.context import Workbench
from workbench.renderer import ClipViewCache

SETTINGS = ComparisonConfig(**QUICK)
PANEL = 11  # the gate panel's outputs (GatePanel.outputs)
MESSAGE = 9  # open_run's message: after selected, title, three plots, metrics, breakdowns, their plot, downloads


@pytest.fixture(scope="module")
def wb(trained_session, tmp_path_factory) -> Workbench:  # noqa: F811
    """A copy of the trained speech session; the click test adds one comparison run to it, which
    the report test reads (the module's tests share it to pay for one comparison)."""
    store = Store.open(copy_session(trained_session[0], tmp_path_factory.mktemp("runs-compare") / "session"))
    yield Workbench(store=store, session_dir=Path(store.session_dir), views=ClipViewCache(store), jobs=None)
    store.close()


@pytest.fixture(scope="module")
def clicked(wb, trained_session) -> tuple[list, list]:  # noqa: F811
    """Compare detectors clicked on the trained run: (the click's run outputs, the progress reported)."""
    reported = []
    opened = runs_handlers.compare_speech_detectors(wb, None, "ana", trained_session[1], "test", settings=SETTINGS,
                                                     report=lambda done, total: reported.append((done, total)))
    return opened, reported


def test_the_button_is_offered_for_a_succeeded_speech_run_only(wb, trained_session, clicked):  # noqa: F811
    button, split_column, report_column, markdown, *figures, durations, worst, player = runs_handlers.report_view(
        wb, trained_session[1])
    assert button.visible is True and split_column.visible is True and report_column.visible is False
    assert markdown == "" and figures == [None, None, None] and durations == [] and worst.empty and player == ""
    assert runs_views.speech_labels(wb.store.run(trained_session[1])) == ("SPEECH", "NONSPEECH")
    comparison = clicked[0][0]
    assert runs_handlers.report_view(wb, comparison)[0].visible is False  # a comparison run is not compared
    assert [shown.visible for shown in runs_handlers.report_view(wb, None)[:3]] == [False, True, False]


def test_a_click_opens_the_comparison_run_and_its_report(wb, trained_session, clicked):  # noqa: F811
    opened, reported = clicked
    run = wb.store.run(opened[0])
    assert run["kind"] == KIND and run["status"] == "succeeded" and run["parent_run_id"] == trained_session[1]
    assert f"<b>run {run['id']}</b> &middot; compare run &middot; succeeded" in opened[1]
    assert opened[MESSAGE].startswith(f'<span class="em-message-ok">comparison {run["id"]}: 3 detectors on 24 test clips')
    assert opened[MESSAGE].endswith("; its report is below</span>")
    assert reported[0] == (0, 3 * 48) and reported[-1] == (3 * 48, 3 * 48)  # 48 val + test clips, three detectors
    assert opened[-PANEL].visible is False  # no gate panel for a comparison run

    button, split_column, report_column, markdown, *figures, durations, worst, player = runs_handlers.report_view(
        wb, run["id"])
    assert button.visible is False and split_column.visible is False and report_column.visible is True
    assert markdown.startswith("# Speech detectors compared (B9)") and "| silero |" in markdown
    assert "## Balanced accuracy per SNR (test)" in markdown
    assert "![" not in markdown and "## Figures" not in markdown and "## Notes" in markdown
    assert all(Path(path).is_file() and Path(path).suffix == ".png" for path in figures)
    assert [caption for _, caption in durations] == ["accuracy against SNR, 300 ms clips",
                                                     "accuracy against SNR, 600 ms clips"]
    assert Path(figures[0]).parent != Path(run["run_dir"]) / "report"  # served from a copy, not the session
    # Each detector's worst test clips, most confidently wrong first, and one of them played.
    assert list(worst.columns) == runs_views.WORST_COLUMNS and player == ""
    assert set(worst.detector) <= {f"run:{trained_session[1]}", "webrtc-3", "silero"} and len(worst) > 0
    assert (worst.label != worst.predicted).all() and worst["SNR (dB)"].isin([-5.0, 5.0, 20.0]).all()
    first = worst.iloc[0].tolist()
    shown = runs_handlers.play_worst_clip(wb, first)
    assert shown.startswith(f"<div style='margin-bottom:4px'>clip {first[1]} ({first[5]:g} dB, {first[6]:g} ms): label "
                            f"{first[2]}; {first[0]} says {first[3]} (score {first[4]:.3f})</div>")
    assert "<audio" in shown and "em-spec" in shown


def test_a_comparison_run_opens_in_the_existing_views_too(wb, clicked):
    comparison = clicked[0][0]
    selected, title, *plots = runs_handlers.open_run(wb, comparison, "test")[:5]
    assert selected == comparison and "compare run" in title and plots == [None, None, None]
    assert runs_handlers.change_split(wb, comparison, "val")[:3] == [None, None, None]
    runs = runs_views.runs_frame(wb).set_index("run")
    assert runs.loc[comparison, "kind"] == KIND and runs.loc[comparison, "gates"] == "-"


def test_refusals_are_one_line_and_create_no_run(wb, trained_session, clicked):  # noqa: F811
    before = len(wb.store.runs())
    comparison = clicked[0][0]

    def refusal(name: str, run_id: str) -> str:
        opened = runs_handlers.compare_speech_detectors(wb, None, name, run_id, "test", settings=SETTINGS)
        assert opened[0] == run_id  # the selected run stays open
        return opened[MESSAGE]

    assert refusal(" ", trained_session[1]) == (
        '<span class="em-message-error">Detectors not compared: Enter your name (top right) before recording '
        'decisions: every decision is signed.</span>')
    assert refusal("ana", comparison) == (
        f'<span class="em-message-error">Detectors not compared: run {comparison} is a succeeded compare run; only a '
        'succeeded training run can be compared with the VADs</span>')
    with pytest.raises(ValueError, match=r"^Select a training run in the table first\.$"):
        runs_handlers.compare_speech_detectors(wb, None, "ana", None, "test")
    assert len(wb.store.runs()) == before


def test_a_model_without_a_speech_class_is_not_offered_and_is_refused(wb, trained_session, monkeypatch):  # noqa: F811
    monkeypatch.setattr(runs_views, "checkpoint_labels", lambda folder: ["alert_sounds", "emergency_sirens"])
    run_id = trained_session[1]
    assert runs_handlers.report_view(wb, run_id)[0].visible is False
    opened = runs_handlers.compare_speech_detectors(wb, None, "ana", run_id, "test", settings=SETTINGS)
    assert opened[MESSAGE] == (f'<span class="em-message-error">Detectors not compared: run {run_id}&#x27;s model has '
                               'no speech class (a label named speech, in any case)</span>')


def test_the_speech_class_is_found_in_any_case():
    labels = {"run_dir": "unused", "kind": "train", "status": "succeeded"}
    cases = {("Speech", "Other"): ("Speech", "Other"), ("music", "speech", "non_speech"): ("speech", "non_speech"),
             ("speech", "music", "noise"): ("speech", "NONSPEECH"), ("speeches", "noise"): None}
    for classes, expected in cases.items():
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(runs_views, "has_checkpoint", lambda folder: True)
            patch.setattr(runs_views, "checkpoint_labels", lambda folder, classes=classes: list(classes))
            assert runs_views.speech_labels(labels) == expected, classes
