"""A study in a real browser against a real server (issue 16): a bad grid refused in one line,
then a tiny study (one config x two seeds, tiny CNNs, one epoch) launched from the Train tab,
its progress line followed to the end, the study opened in the Runs tab (results with the
spread over seeds, the plot, the trials, no audit of the study itself), and its best trial sent
through the audit and the gates, which decide whether Promote may put it in production."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import LENIENT_GATES, TINY_CNN, copy_session
from core.store import Store
from test_ui_train_runs import JOB_TIMEOUT_MS, pick_preset, run_cell, wait_status
from ui_support import browser_page, needs_chromium, open_tab, real_errors, running_server, screenshot, set_annotator

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]
FIXED = "".join(f"  {item.split('=', 1)[0]}: {item.split('=', 1)[1]}\n" for item in [*TINY_CNN, *LENIENT_GATES])
STUDY_YAML = "configs:\n  - {name: tiny, set: {}}\nfixed:\n" + FIXED


def fill_grid_yaml(page, text: str) -> None:
    page.locator("#em-study-yaml .cm-content").fill(text)
    page.locator("#em-study-seeds input, #em-study-seeds textarea").first.click()  # leave the editor: its value is sent


def test_a_study_from_the_train_tab_to_its_best_trial_through_the_gates(small_demo_session, tmp_path):
    session = copy_session(small_demo_session, tmp_path / "session")
    with running_server(session) as url, browser_page(url) as (page, errors):
        set_annotator(page, "ana")
        open_tab(page, "Train")
        pick_preset(page, "demo-fast")
        page.get_by_text("Run a study: a grid of settings").click()
        page.locator("#em-study-use-yaml input").check()

        # A key the preset does not have: one line naming it and what is allowed; nothing queued.
        fill_grid_yaml(page, "grid:\n  model.lora_rank: [4, 8]\n")
        page.locator("#em-study-message").get_by_text("2 configs x 3 seeds = 6 trials").wait_for(timeout=30000)
        page.locator("#em-study-launch").click()
        refusal = page.locator("#em-study-message .em-message-error")
        refusal.get_by_text("Study not started: grid config 'model.lora_rank=4': unknown key 'model.lora_rank'; "
                            "allowed: ").wait_for(timeout=30000)
        assert "cnn_channels" in refusal.inner_text()  # the keys it may be
        with Store.open_snapshot(session) as store:
            assert store.runs().empty

        # One config x two seeds, every trial a tiny CNN for one epoch, gates anyone passes.
        fill_grid_yaml(page, STUDY_YAML)
        seeds = page.locator("#em-study-seeds input, #em-study-seeds textarea").first
        seeds.fill("7, 8")
        seeds.press("Tab")
        page.locator("#em-study-message").get_by_text("1 config x 2 seeds = 2 trials").wait_for(timeout=30000)
        screenshot(page, "study_train_form")
        page.locator("#em-study-launch").click()
        page.locator("#em-study-message").get_by_text("queued").wait_for(timeout=30000)
        assert "every trial from the preset's own start (no production model yet)" in page.locator("#em-study-message").inner_text()
        study_id = re.search(r"study (\S+-study-\S+) queued: 2 trials", page.locator("#em-study-message").inner_text()).group(1)

        # The progress line: the running trial with its steps, then trials done with the best so far.
        progress = page.locator("#em-train-progress")
        page.wait_for_function("/trial 1: tiny seed 7, run \\S+, step \\d+ \\/ \\d+/.test("
                               "document.querySelector('#em-train-progress').innerText)", timeout=JOB_TIMEOUT_MS)
        screenshot(page, "study_train_running", full_page=False)
        page.wait_for_function("/1 \\/ 2 trials done/.test(document.querySelector('#em-train-progress').innerText)",
                               timeout=JOB_TIMEOUT_MS)
        assert "best so far: tiny, val f1_macro" in progress.inner_text()
        wait_status(page, "succeeded")
        status = progress.inner_text()
        assert f"study {study_id}" in status and "2 / 2 trials done" in status and "2 of 2 trials succeeded" in status
        assert page.locator('#em-train-jobs [data-testid="cell-0-1"]').inner_text() == "study"
        screenshot(page, "study_train_done")

        # Runs: the study beside the runs; its table (mean ± std [95% interval]), plot and trials.
        open_tab(page, "Runs")
        page.locator("#em-runs-table").get_by_text(study_id).wait_for(timeout=30000)
        row = next(r for r in range(20) if run_cell(page, r, 0) == study_id)
        assert run_cell(page, row, 1) == "study" and run_cell(page, row, 2) == "succeeded"
        page.locator(f'#em-runs-table [data-testid="cell-{row}-0"]').click()
        page.locator("#em-runs-study-markdown").get_by_text("2 of 2 trials succeeded").wait_for(timeout=30000)
        cell = page.locator('#em-runs-study-results [data-testid="cell-0-3"]').inner_text()
        assert re.fullmatch(r"\d\.\d{3} ± \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", cell), cell
        assert page.locator('#em-runs-study-results [data-testid="cell-0-1"]').inner_text() == "tiny"
        page.locator("#em-runs-study-plot img").wait_for(timeout=30000)
        trials = page.locator("#em-runs-study-trials").inner_text()
        assert trials.count("succeeded") == 2
        assert not page.locator("#em-runs-audit").is_visible() and not page.locator("#em-runs-evaluate").is_visible()
        assert not page.locator("#em-runs-plots").is_visible()  # no run plots for the study itself
        assert page.locator("#em-runs-export").inner_text().startswith("Prepare downloads: the study's report")
        target = page.locator("#em-runs-study-target input").input_value()
        assert target.startswith("tiny seed ") and "the best config's best seed" in target
        best_run = re.search(r"run (\S+-train-\S+) ", target).group(1)
        page.wait_for_timeout(500)
        screenshot(page, "study_runs_results")

        # Promote the best through the gates: its audit and gates are a queued job; the gates decide.
        page.locator("#em-runs-study-promote").click()
        page.locator("#em-runs-study-message").get_by_text(f"(run {best_run})").wait_for(timeout=30000)
        verdict = page.locator("#em-runs-verdict")
        verdict.get_by_text(re.compile(r"Every gate passes|gate\(s\) failed")).wait_for(timeout=JOB_TIMEOUT_MS)
        screenshot(page, "study_runs_gates")
        if verdict.locator(".em-verdict").get_attribute("data-passed") == "true":
            page.locator("#em-runs-promote").click()
            verdict.get_by_text("This run is the production model.").wait_for(timeout=30000)
            page.locator("#em-runs-production").get_by_text(f"Production: run {best_run}").wait_for(timeout=30000)
        else:  # refused, as for any run: Promote stays disabled
            assert not page.locator("#em-runs-promote").is_enabled()
        screenshot(page, "study_runs_promoted")
        assert real_errors(errors) == []

    with Store.open(session) as store:
        audits = store.runs(kind="audit")
        assert audits.parent_run_id.tolist() == [best_run]  # the best trial was audited, not the study
        assert (Path(store.run(best_run)["run_dir"]) / "gates" / "gate_report.json").is_file()
        promoted = store.promotions()
        assert promoted.run_id.tolist() in ([best_run], [])
