"""The Confusions and Data tabs in a real browser against a real server."""
from __future__ import annotations

import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import copy_session, tone, write_wav
from core.store import Rule, Store
from pipelines.confusions import confusion
from ui_support import (browser_page, error_badges, needs_chromium, open_tab, real_errors, running_server, screenshot,
                        set_annotator)

pytestmark = [pytest.mark.browser, needs_chromium]


@pytest.fixture(scope="module")
def session(tmp_path_factory, trained_demo_session) -> Path:
    """A small demo session whose one trained run is production."""
    session = copy_session(trained_demo_session, tmp_path_factory.mktemp("confusions") / "session")
    with Store.open(session) as store:
        run = store.runs(kind="train").id.iloc[0]
        store.record_promotion(run, action="promote", actor="test")
    return session


def busiest_mistake(session: Path) -> tuple[str, str, list[int], list[str]]:
    """The test-split cell with the most clips, off the diagonal when there is one: (true,
    predicted, its clip ids most confident first, the run's classes)."""
    with Store.open(session) as store:
        conf = confusion(store, store.production_run(), split="test")
    cells = [(int(conf.counts.at[t, p]), t != p, t, p) for t in conf.labels for p in conf.labels]
    _, _, true, predicted = max(cells, key=lambda c: (c[1] and c[0] > 0, c[0]))
    return true, predicted, conf.cell(true, predicted).clip_id.tolist(), conf.labels


TABLE_IN_VIEW = """(selector) => {
  const table = document.querySelector(selector);
  const box = table.querySelector('.virtual-table-viewport');
  const firsts = [...table.querySelectorAll('[data-testid^="cell-"]')].filter(c => /^cell-\\d+-0$/.test(c.dataset.testid));
  const last = firsts[firsts.length - 1];
  const shown = box.getBoundingClientRect(), row = last.getBoundingClientRect();
  return {rows: firsts.length, last_bottom: row.bottom, box_bottom: shown.bottom, scroll_height: box.scrollHeight,
          client_height: box.clientHeight, scroll_width: box.scrollWidth, client_width: box.clientWidth};
}"""


def assert_whole_table_in_view(page, selector: str, *, rows: int | None = None) -> None:
    """Every row and column of the table lies inside its visible box: none hidden below the box's
    edge or behind a scroll bar (a box that scrolls cuts off what is past its edge)."""
    view = page.evaluate(TABLE_IN_VIEW, selector)
    assert rows is None or view["rows"] == rows, view
    assert view["last_bottom"] <= view["box_bottom"] + 0.5, view
    assert view["scroll_height"] <= view["client_height"] and view["scroll_width"] <= view["client_width"], view


def test_a_confusion_cell_plays_its_clips_and_relabels_into_the_log(session):
    true, predicted, clip_ids, labels = busiest_mistake(session)
    new_label = next(label for label in labels if label not in (true, predicted))
    with running_server(session) as url, browser_page(url) as (page, errors):
        set_annotator(page, "ana")
        open_tab(page, "Confusions")
        cell = page.locator(f'#em-conf-matrix [data-testid="cell-{labels.index(true)}-{labels.index(predicted) + 1}"]')
        cell.wait_for(timeout=30000)
        assert "this is the production run" in page.locator("#em-conf-overall").inner_text()
        page.locator("#em-conf-heatmap img").wait_for(timeout=30000)
        assert_whole_table_in_view(page, "#em-conf-matrix", rows=len(labels))
        assert_whole_table_in_view(page, "#em-conf-metrics")
        screenshot(page, "confusions_tab")

        cell.click()
        title = page.locator("#em-conf-cell-title")
        title.get_by_text(f"true {true} → predicted {predicted}: {len(clip_ids)} clips").wait_for(timeout=20000)
        shown = [int(page.locator(f'#em-conf-cell [data-testid="cell-{i}-0"]').inner_text()) for i in range(len(clip_ids))]
        assert shown == clip_ids  # most confident first

        page.locator('#em-conf-cell [data-testid="cell-0-1"]').click()
        page.wait_for_selector(f'#em-conf-player .em-player[data-clip="{clip_ids[0]}"]', timeout=20000)
        page.evaluate("document.querySelector('#em-conf-player audio').play()")
        page.wait_for_function("document.querySelector('#em-conf-player audio').currentTime > 0.2", timeout=15000)
        page.evaluate("document.querySelector('#em-conf-player audio').pause()")

        page.locator("#em-conf-relabel-to input").click()
        page.get_by_role("option", name=new_label, exact=True).click()
        page.locator("#em-conf-relabel").click()
        page.locator("#em-conf-message").get_by_text(f"clip {clip_ids[0]}: relabelled {new_label}").wait_for(timeout=20000)
        title.get_by_text("1 relabelled since this run (stale)").wait_for(timeout=20000)
        assert "stale 1" in cell.inner_text()
        assert_whole_table_in_view(page, "#em-conf-matrix", rows=len(labels))  # a stale cell's row is taller

        page.locator("#em-conf-quarantine").click()  # no reason yet: refused with a message
        page.get_by_text("Write a reason first").first.wait_for(timeout=10000)
        page.wait_for_timeout(500)
        assert error_badges(page) == 0 and cell.is_visible()  # the matrix and the clip stay as they were
        assert page.locator(f'#em-conf-player .em-player[data-clip="{clip_ids[0]}"]').count() == 1
        page.locator("#em-conf-reason textarea").fill("horn-like, listen again")
        page.locator("#em-conf-quarantine").click()
        page.locator("#em-conf-message").get_by_text("sent to the quarantine queue").wait_for(timeout=20000)
        screenshot(page, "confusions_tab_relabelled")
        assert "Traceback" not in page.content()
        assert real_errors(errors) == []

    with Store.open(session) as store:
        log = store.decisions(annotator="ana")
        assert list(log.action) == ["quarantine", "relabel"]
        assert (log.clip_id == clip_ids[0]).all() and log.iloc[1].new_label == new_label
        assert store.clip_state(clip_ids[0])["label"] == new_label
        entry = store.quarantine_queue().set_index("clip_id").loc[clip_ids[0]]
        assert entry.reason.startswith("horn-like, listen again [confusion cell of run")
        assert f"true {true}, predicted {predicted}" in entry.reason


def test_data_tab_imports_a_folder_dataset_and_shows_its_summary_and_statistics(session, tmp_path):
    folder = tmp_path / "extra"
    for label, freq in (("horn", 700), ("rain", 150)):
        for i in range(5):
            write_wav(folder / label / f"{label}-{i}.wav", tone(freq + 10 * i, seconds=0.8))
    (folder / "rain" / "broken.wav").write_text("not audio at all")
    with running_server(session) as url, browser_page(url) as (page, errors):
        open_tab(page, "Data")
        page.locator("#em-data-totals").get_by_text("in 1 datasets").wait_for(timeout=20000)
        per_class = page.locator("#em-data-per-class").inner_text()
        page.locator("#em-data-source textarea, #em-data-source input").first.fill(str(tmp_path / "nowhere"))
        page.locator("#em-data-import").click()  # a bad path: refused, and the statistics stay
        page.locator(".toast-body").get_by_text("nowhere").first.wait_for(timeout=20000)
        page.wait_for_timeout(500)
        assert error_badges(page) == 0 and "in 1 datasets" in page.locator("#em-data-totals").inner_text()
        assert page.locator("#em-data-per-class").inner_text() == per_class
        page.locator("#em-data-source textarea, #em-data-source input").first.fill(str(folder))
        page.locator("#em-data-import").click()
        summary = page.locator("#em-data-import-summary")
        summary.get_by_text("dataset 'extra' (folder): 11 files found: 10 readable added, 1 unreadable recorded, "
                            "0 already imported").wait_for(timeout=60000)
        summary.get_by_text("the session holds 1 unreadable file(s), kept out of training").wait_for(timeout=5000)
        page.locator("#em-data-totals").get_by_text("in 2 datasets (demo, extra)").wait_for(timeout=20000)
        unreadable = page.locator("#em-data-unreadable").inner_text()
        assert "rain/broken.wav" in unreadable and "extra" in unreadable
        assert "horn" in page.locator("#em-data-per-class").inner_text()
        assert_whole_table_in_view(page, "#em-data-per-class")  # the total column too
        page.wait_for_function("[...document.querySelectorAll('#em-data-durations text')]"
                               ".some(t => t.textContent === '0-1 s')", timeout=20000)  # the 0.8 s clips
        page.locator("#em-data-durations").scroll_into_view_if_needed()
        screenshot(page, "data_tab_import")
        assert real_errors(errors) == []
        # The imported audio is served at once (its root joins the allowed paths), nothing else is.
        served = urllib.request.urlopen(url + "/gradio_api/file=" + urllib.parse.quote(str(folder / "horn" / "horn-0.wav")))
        assert served.status == 200

    with Store.open(session) as store:
        clips = store.clips()
        extra = clips[clips.dataset == "extra"]
        assert len(extra) == 11 and (extra.status != "ok").sum() == 1


def test_data_tab_previews_augmentations_and_exports_the_manifest(session, tmp_path):
    with running_server(session) as url, browser_page(url) as (page, errors):
        open_tab(page, "Data")
        page.locator("#em-aug-preview").click()
        page.wait_for_selector("#em-aug-after .em-player", timeout=60000)
        assert page.locator("#em-aug-before .em-spec-img").count() == 1
        assert page.evaluate("document.querySelector('#em-aug-after audio').src").startswith("data:audio/wav;base64,")
        page.evaluate("document.querySelector('#em-aug-after audio').play()")
        page.wait_for_function("document.querySelector('#em-aug-after audio').currentTime > 0.2", timeout=15000)
        page.evaluate("document.querySelector('#em-aug-after audio').pause()")
        page.locator("#em-aug-logmel img").wait_for(timeout=20000)
        applied = page.locator("#em-aug-applied").inner_text()
        assert "time_stretch" in applied and "pitch_shift" in applied  # p = 1: every step of the preset

        # background_noise draws from the noise bank named beside the list; a wrong folder is explained.
        bank = tmp_path / "bank"
        write_wav(bank / "noise" / "hum.wav", 0.2 * np.sin(2 * np.pi * 90 * np.arange(32000) / 16000))
        page.locator("#em-aug-specs .cm-content").fill("- name: background_noise\n  params: {min_snr_db: 5, max_snr_db: 5}\n")
        page.locator("#em-aug-noise-bank textarea, #em-aug-noise-bank input").first.fill(str(tmp_path / "nowhere"))
        page.locator("#em-aug-preview").click()
        page.get_by_text("is not a folder; expected one in MUSAN layout").first.wait_for(timeout=30000)
        page.locator("#em-aug-noise-bank textarea, #em-aug-noise-bank input").first.fill(str(bank))
        page.locator("#em-aug-preview").click()
        page.locator("#em-aug-applied span").get_by_text("noise/hum.wav").wait_for(timeout=30000)
        assert "background_noise" in page.locator("#em-aug-applied").inner_text()

        page.locator("#em-data-export").click()
        link = page.locator("#em-data-export-file a").first
        link.wait_for(timeout=30000)
        with page.expect_download() as download:
            link.click()
        exported = tmp_path / "downloaded.csv"
        download.value.save_as(exported)
        page.locator("#em-data-export-message").get_by_text("as of decision").wait_for(timeout=10000)
        page.locator("#em-aug-after").scroll_into_view_if_needed()
        screenshot(page, "data_tab_preview_export")
        assert real_errors(errors) == []

    table = pd.read_csv(exported)
    with Store.open(session) as store:
        labels = store.labels(as_of=int(table.as_of_decision_id.iloc[0])).set_index("clip_id")
        assert (session / "exports" / f"manifest-asof-{table.as_of_decision_id.iloc[0]}.csv").is_file()
    assert sorted(table.clip_id) == sorted(labels.index)
    assert (table.set_index("clip_id").label.fillna("") == labels.label.reindex(table.clip_id).fillna("")).all()


def test_data_tab_adds_and_edits_a_relabel_rule_and_refuses_a_bad_one(session):
    def fill(field: str, text: str) -> None:
        page.locator(f"#{field} textarea, #{field} input").first.fill(text)

    with Store.open(session) as store:
        before = {rule.tag: rule for rule in store.rules()}
        decisions = store.decision_count()
    with running_server(session) as url, browser_page(url, width=1440, height=1000) as (page, errors):
        open_tab(page, "Data")
        table = page.locator("#em-rules-table")
        table.get_by_text("ambiguous_drone").wait_for(timeout=20000)
        assert_whole_table_in_view(page, "#em-rules-table", rows=len(before))
        cells = table.locator('[data-testid^="cell-"]')
        shown = cells.all_inner_texts()

        fill("em-rule-tag", "horn_like")
        page.locator("#em-rule-target input").click()
        page.get_by_role("option", name="alert_sounds", exact=True).click()
        fill("em-rule-hotkey", "1")  # true_siren's key: refused, one line naming the field
        page.locator("#em-rule-save").click()
        page.locator(".toast-body").get_by_text("rule 'horn_like': hotkey 1 is already the key of rule 'true_siren'",
                                                exact=True).wait_for(timeout=20000)
        page.wait_for_timeout(500)
        assert error_badges(page) == 0 and cells.all_inner_texts() == shown

        fill("em-rule-hotkey", "7")
        fill("em-rule-description", "a car horn")
        page.locator("#em-rule-save").click()
        message = page.locator("#em-rule-message")
        message.get_by_text("rule horn_like -> relabel alert_sounds, release added").wait_for(timeout=20000)
        table.get_by_text("horn_like").wait_for(timeout=10000)

        table.locator('[data-testid="cell-2-1"]').click()  # ambient: its rule fills the form
        page.wait_for_function("document.querySelector('#em-rule-tag textarea, #em-rule-tag input').value === 'ambient'",
                               timeout=20000)
        assert page.locator("#em-rule-hotkey textarea, #em-rule-hotkey input").first.input_value() == "3"
        fill("em-rule-description", "edited in the browser")
        page.locator("#em-rule-save").click()
        message.get_by_text("rule ambient -> relabel environmental_sounds, release changed").wait_for(timeout=20000)
        assert_whole_table_in_view(page, "#em-rules-table", rows=len(before) + 1)
        page.locator("#em-rules-table").scroll_into_view_if_needed()
        screenshot(page, "data_tab_rules")
        assert real_errors(errors) == []

    with Store.open(session) as store:
        rules = {rule.tag: rule for rule in store.rules()}
        assert store.decision_count() == decisions  # editing rules records no decision
    assert rules["horn_like"] == Rule("horn_like", "relabel", "alert_sounds", False, "a car horn", "7")
    assert rules["ambient"].description == "edited in the browser"
    assert {tag: rule for tag, rule in rules.items() if tag not in ("horn_like", "ambient")} == {
        tag: rule for tag, rule in before.items() if tag != "ambient"}
