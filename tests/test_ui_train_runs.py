"""Train and Runs in a real browser against a real server: one-click fine-tune to the gate report,
promote / override / compare / roll back, the job queue, cancel, a job outliving its browser
tab, and an invalid setting refused with the field's name."""
from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from conftest import LENIENT_GATES, copy_session
from core import review
from core.run_folder import LOG_FILE
from core.store import Store
from pipelines.audit import audit
from pipelines.finetune import finetune
from pipelines.promotion import promote
from ui_support import browser_page, needs_chromium, open_tab, real_errors, running_server, screenshot, set_annotator

pytestmark = [pytest.mark.browser, needs_chromium]
JOB_TIMEOUT_MS = 300_000


@pytest.fixture(scope="module")
def session(tmp_path_factory, trained_demo_session) -> Path:
    """A small demo session with an audited baseline run (demo-fast, 2 epochs, lenient gates, not
    yet promoted) and three clips relabelled after the baseline froze its labels (for the spot-check)."""
    session = copy_session(trained_demo_session, tmp_path_factory.mktemp("train-runs") / "session")
    with Store.open(session) as store:
        baseline = store.runs(kind="train").id.iloc[0]
        assert store.run(baseline)["config"]["gates"]["min_class_accuracy"] == 0  # LENIENT_GATES
        assert audit(store, run_id=baseline, progress=False).status == "succeeded"
        state = store.labels()
        for clip_id in state[(state.split == "train") & (state.label != "emergency_sirens")].clip_id.head(3):
            review.relabel(store, int(clip_id), label="emergency_sirens", annotator="ana", note="a siren after all")
    return session


def choose(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option).first.click()


def pick_preset(page, name: str) -> None:
    """Choose a preset and wait until its values fill the form (typing before would be overwritten)."""
    choose(page, "em-train-preset", name)
    page.locator("#em-train-message").get_by_text(f"preset {name} loaded").wait_for(timeout=30000)


def type_epochs(page, value: str) -> None:
    """Type an epochs value into the Train form and leave the field, which previews the change."""
    epochs = page.locator("#em-train-train-epochs input")
    epochs.fill(value)
    epochs.press("Tab")


def job_status(page) -> str:
    return page.locator("#em-train-progress .em-job").get_attribute("data-status")


def wait_status(page, status: str, *, timeout_ms: int = JOB_TIMEOUT_MS) -> None:
    page.wait_for_function(f"document.querySelector('#em-train-progress .em-job')?.dataset.status === '{status}'",
                           timeout=timeout_ms)


def dropdown_options(page, elem_id: str) -> list[str]:
    """The choices a dropdown offers now (opened, read, closed again)."""
    page.locator(f"#{elem_id} input").click()
    options = page.locator(f"#{elem_id}").get_by_role("option")
    options.first.wait_for(timeout=30000)
    texts = options.all_inner_texts()
    page.keyboard.press("Escape")
    return [t.replace("\u2713", "").strip() for t in texts]  # the chosen one is ticked


def wait_for_options(page, elem_id: str, until, *, timeout_s: float = 30) -> list[str]:
    """The dropdown's choices once until(choices) holds (a tab select refreshes them in the background)."""
    deadline = time.monotonic() + timeout_s
    while not until(choices := dropdown_options(page, elem_id)):
        assert time.monotonic() < deadline, f"#{elem_id} still offers {choices}"
        page.wait_for_timeout(500)
    return choices


def run_cell(page, row: int, column: int) -> str:
    return page.locator(f'#em-runs-table [data-testid="cell-{row}-{column}"]').inner_text()


def select_run(page, run_id: str) -> None:
    for row in range(50):
        if run_cell(page, row, 0) == run_id:
            page.locator(f'#em-runs-table [data-testid="cell-{row}-0"]').click()
            page.locator("#em-runs-title").get_by_text(f"run {run_id}").wait_for(timeout=30000)
            return
    raise AssertionError(f"run {run_id} is not in the runs table")


def gates_of(page, run_id: str) -> str:
    """The gates column of a run in the runs table."""
    for row in range(50):
        if run_cell(page, row, 0) == run_id:
            return run_cell(page, row, 4)
    raise AssertionError(f"run {run_id} is not in the runs table")


def test_fine_tune_to_gate_report_promote_compare_and_roll_back(session):
    with Store.open(session) as store:
        baseline = store.runs(kind="train").id.iloc[0]
    with running_server(session) as url, browser_page(url) as (page, errors):
        set_annotator(page, "ana")

        # Runs: the audited baseline's gates are evaluated on request and pass; Promote is enabled.
        open_tab(page, "Runs")
        page.locator('#em-runs-table [data-testid="cell-1-0"]').get_by_text(baseline).wait_for(timeout=30000)
        select_run(page, baseline)
        page.locator("#em-runs-evaluate").click()
        page.locator("#em-runs-verdict").get_by_text("Every gate passes").wait_for(timeout=30000)
        assert page.locator("#em-runs-promote").is_enabled()
        assert not page.locator("#em-runs-override").is_enabled()
        assert page.locator("#em-runs-plots img").count() == 3  # confusion, reliability, training curves
        page.locator('#em-runs-breakdowns [data-testid="cell-0-0"]').get_by_text("duration_s").wait_for(timeout=30000)
        assert "snr_db" in page.locator("#em-runs-breakdowns").inner_text()  # the demo manifest's SNR column
        assert page.locator("#em-runs-breakdown-plot img").count() == 1
        page.locator("#em-runs-promote").click()
        page.locator("#em-runs-verdict").get_by_text("This run is the production model.").wait_for(timeout=30000)
        page.locator("#em-runs-production").get_by_text(f"Production: run {baseline}").wait_for(timeout=30000)

        # Train: demo-fast with 2 epochs from the form, one click.
        open_tab(page, "Train")
        pick_preset(page, "demo-fast")
        type_epochs(page, "2")
        page.locator("#em-train-message").get_by_text("train.epochs=2").wait_for(timeout=30000)
        screenshot(page, "train_tab_form")
        page.locator("#em-train-launch").click()
        page.locator("#em-train-message").get_by_text("queued").wait_for(timeout=30000)
        # The job's progress is brought into view (it sits below the form, under the fold).
        page.wait_for_function("(() => { const box = document.querySelector('#em-train-progress').getBoundingClientRect();"
                               " return box.top >= 0 && box.bottom <= window.innerHeight; })()", timeout=30000)
        queued = page.locator("#em-train-message").inner_text()
        run_id = re.search(r"run (\S+-train-\S+) queued", queued).group(1)
        assert f"It starts from production run {baseline}, whose architecture and features match the preset." in queued
        # Two epochs of this small session are a few steps: the training and auditing phases can fall
        # between two refreshes, so their live view is checked in the 60-epoch queue test below.
        wait_status(page, "succeeded")
        # The curves keep the training loss of every step; the log ends with the audit's gate verdict.
        assert page.locator("#em-train-loss").get_by_text("train loss (per step)").count() >= 1
        shown_log = page.locator("#em-train-log textarea").input_value()
        assert re.search(r"every gate passes|gate\(s\) failed", shown_log)
        with Store.open_snapshot(session) as store:  # the file the log's label points to holds every line shown
            written = (Path(store.run(run_id)["run_dir"]) / LOG_FILE).read_text()
        assert all(line in written for line in shown_log.splitlines()), (shown_log, written[-2000:])

        # The gate report, criterion by criterion, the A8 checklist, the spot-check players, the regressions.
        verdict = page.locator("#em-train-verdict")
        verdict.wait_for(timeout=30000)
        assert f"against production run {baseline}" in verdict.inner_text()
        checklist = page.locator("#em-train-checklist").inner_text()
        for item in ("Test accuracy over all classes", "Key-class extreme-off in test", "Spot-check up to 5 relabelled files",
                     "Regression check"):
            assert item in checklist
        criteria = page.locator("#em-train-criteria").inner_text()
        assert "accuracy[emergency_sirens]" in criteria and "regression[" in criteria
        assert page.locator("#em-train-spot-check .em-player").count() == 3  # the three relabelled clips
        assert "emergency_sirens" in page.locator("#em-train-spot-check").inner_text()
        page.wait_for_timeout(500)
        screenshot(page, "train_tab_gate_report")

        passed = verdict.get_attribute("data-passed") == "true"
        # The verdict says how much of production the run kept; the job's state and colour follow the verdict.
        copied = re.search(rf"Started from production run {baseline}: (\d+) of (\d+) tensors copied", verdict.inner_text())
        assert copied and copied.group(1) == copied.group(2), verdict.inner_text()
        state = "trained, gates passed" if passed else "trained, gates failed"
        assert page.locator("#em-train-progress .em-job").get_attribute("data-gates") == ("passed" if passed else "failed")
        assert state in page.locator("#em-train-progress .em-job-status").inner_text()
        assert page.locator('#em-train-jobs [data-testid="cell-0-2"]').inner_text() == state
        if passed:
            page.locator("#em-train-promote").click()
            page.locator("#em-train-decision").get_by_text(f"run {run_id} promoted to production").wait_for(timeout=30000)
        else:  # refused: Promote stays disabled; an override needs a reason and is signed
            assert not page.locator("#em-train-promote").is_enabled()
            page.locator("#em-train-override").click()
            page.locator(".toast-body").get_by_text("An override needs a reason").wait_for(timeout=30000)
            page.locator("#em-train-reason textarea").fill("the siren class matters more here; regressions reviewed by ear")
            page.locator("#em-train-override").click()
            page.locator("#em-train-decision").get_by_text(f"run {run_id} put in production by override").wait_for(timeout=30000)
        page.locator("#em-train-verdict").get_by_text("This run is the production model.").wait_for(timeout=30000)

        # Runs: the new run is production; compare it with the baseline; roll back.
        open_tab(page, "Runs")
        page.locator("#em-runs-production").get_by_text(f"Production: run {run_id}").wait_for(timeout=30000)
        select_run(page, run_id)
        row = next(r for r in range(50) if run_cell(page, r, 0) == run_id)
        assert run_cell(page, row, 3) == "\u2605 production"
        assert run_cell(page, row, 4).startswith("pass" if passed else "fail")
        screenshot(page, "runs_tab_selected")

        # Downloads: the run's report, predictions and checkpoint.
        page.locator("#em-runs-export").click()
        links = page.locator("#em-runs-downloads a")
        links.first.wait_for(timeout=30000)
        names = [links.nth(i).get_attribute("download") for i in range(links.count())]
        assert names == [f"{run_id}-report.json", f"{run_id}-predictions.csv", f"{run_id}-checkpoint.zip"]
        with page.expect_download() as download:
            links.first.click()
        report = json.loads(Path(download.value.path()).read_text())
        assert report["run"]["id"] == run_id and report["gate_report"]["run_id"] == run_id
        assert [p["action"] for p in report["promotions"]] == ["promote" if passed else "override"]
        with page.expect_download() as download:
            links.nth(1).click()
        predictions = pd.read_csv(download.value.path())
        assert list(predictions.columns) == ["run_id", "clip_id", "split", "label", "predicted", "confidence", "probs"]
        assert len(json.loads(predictions.probs.iloc[0])) == 6

        page.get_by_role("tab", name="Compare two runs").click()
        choose(page, "em-compare-baseline", baseline)
        choose(page, "em-compare-candidate", f"{run_id} (production)")
        page.locator("#em-compare").click()
        page.locator("#em-compare-summary").get_by_text(re.compile(r"on \d+ test clips")).wait_for(timeout=30000)
        deltas = page.locator("#em-compare-deltas").inner_text()
        assert "emergency_sirens" in deltas and "accuracy change" in deltas
        assert "duration_s" in page.locator("#em-compare-breakdowns").inner_text()  # the same clips, per metadata group
        page.locator("#em-compare-confusion img").wait_for(timeout=30000)
        flips = page.locator('#em-compare-flips [data-testid="cell-0-1"]')
        if flips.count():  # a flipped clip plays right there
            flips.click()
            page.locator("#em-compare-player .em-player").wait_for(timeout=30000)
        screenshot(page, "runs_tab_compare")

        page.get_by_role("tab", name="Production history").click()
        page.locator("#em-runs-rollback").click()  # no reason: refused in one line, nothing asked or written
        page.get_by_text("reason: a rollback needs a reason").first.wait_for(timeout=30000)
        assert not page.locator("#em-runs-rollback-confirm").is_visible()
        page.get_by_label("rollback reason (recorded with your name)").fill("checking the rollback")
        page.locator("#em-runs-rollback").click()  # with a reason: the change is shown first
        change = page.locator("#em-runs-rollback-change")
        change.get_by_text(f"production goes from run {run_id} (test 0.").wait_for(timeout=30000)
        assert f"to run {baseline} (test 0." in change.inner_text()
        with Store.open_snapshot(session) as store:
            assert store.production_run() == run_id  # asking wrote nothing
        page.locator("#em-runs-rollback-yes").click()
        page.locator("#em-runs-history-message").get_by_text(
            f"production rolled back from run {run_id} to run {baseline}").wait_for(timeout=30000)
        page.locator("#em-runs-production").get_by_text(f"Production: run {baseline}").wait_for(timeout=30000)
        history = page.locator("#em-runs-history").inner_text()
        assert "rollback" in history and ("override" in history or "promote" in history)
        screenshot(page, "runs_tab_history")

        # Without a reload, Review's runs and Train's verdict follow the rollback.
        open_tab(page, "Review")
        runs = wait_for_options(page, "em-review-run", lambda runs: f"{baseline} (train, production)" in runs)
        assert f"{run_id} (train)" in runs, runs
        open_tab(page, "Train")
        page.locator("#em-train-verdict").get_by_text("production stays run" if not passed else "may be promoted"
                                                      ).wait_for(timeout=30000)
        assert "This run is the production model." not in page.locator("#em-train-verdict").inner_text()
        wait_for_options(page, "em-train-init", lambda runs: f"production model (run {baseline})" in runs)
        assert real_errors(errors) == []

    with Store.open(session) as store:
        assert store.production_run() == baseline
        actions = store.promotions().action.tolist()
        assert actions == ["rollback", "promote" if passed else "override", "promote"]
        assert store.promotions().actor.tolist() == ["ana", "ana", "ana"]
        assert store.promotions().reason.tolist()[0] == "checking the rollback"


def test_an_invalid_setting_is_refused_naming_its_field(session):
    with running_server(session) as url, browser_page(url) as (page, errors):
        set_annotator(page, "ana")
        open_tab(page, "Train")
        pick_preset(page, "demo-fast")
        type_epochs(page, "0")
        page.locator("#em-train-message").get_by_text("train.epochs: 0 is out of range [1, 10000]").wait_for(timeout=30000)
        page.locator("#em-train-launch").click()
        page.locator(".toast-body").get_by_text("Not started: train.epochs: 0 is out of range").wait_for(timeout=30000)
        assert "Not started: train.epochs: 0" in page.locator("#em-train-message").inner_text()
        screenshot(page, "train_tab_invalid")
        assert job_status(page) == "none"  # nothing was queued
        assert real_errors(errors) == []


def test_jobs_queue_survive_the_tab_closing_and_cancel(session):
    with running_server(session) as url:
        with browser_page(url) as (page, errors):
            set_annotator(page, "ben")
            open_tab(page, "Train")
            pick_preset(page, "demo-fast")
            type_epochs(page, "60")
            page.locator("#em-train-launch").click()
            page.locator("#em-train-message").get_by_text("queued.").wait_for(timeout=30000)
            first = re.search(r"run (\S+) queued", page.locator("#em-train-message").inner_text()).group(1)
            page.locator("#em-train-launch").click()  # a second job waits for the first
            page.locator("#em-train-message").get_by_text("1 job(s) ahead of it").wait_for(timeout=30000)
            second = re.search(r"run (\S+) queued", page.locator("#em-train-message").inner_text()).group(1)
            page.locator("#em-train-jobs").get_by_text("queued #1").wait_for(timeout=30000)
            assert real_errors(errors) == []
        # The tab is closed; the job goes on. A new visitor sees it training and the queue behind it.
        with browser_page(url) as (page, errors):
            open_tab(page, "Train")  # from the first paint: the job (or a neutral "reading"), never "no fine-tune"
            assert job_status(page) in ("loading", "running", "queued"), job_status(page)
            page.wait_for_function("document.querySelector('#em-train-progress .em-job')?.dataset.phase === 'training'",
                                   timeout=JOB_TIMEOUT_MS)
            assert f"run {first}" in page.locator("#em-train-progress").inner_text()
            assert "queued #1" in page.locator("#em-train-jobs").inner_text()
            page.wait_for_function("/step [1-9]/.test(document.querySelector('#em-train-progress').innerText)",
                                   timeout=JOB_TIMEOUT_MS)
            screenshot(page, "train_tab_running")
            page.locator("#em-train-cancel").click()
            wait_status(page, "cancelled", timeout_ms=120_000)
            assert "cancelled at step" in page.locator("#em-train-log textarea").input_value()
            # The queued job started by itself; it is cancelled from the jobs table.
            assert page.locator('#em-train-jobs [data-testid="cell-0-0"]').inner_text() == second  # newest first
            page.locator('#em-train-jobs [data-testid="cell-0-0"]').click()
            page.locator("#em-train-progress").get_by_text(f"run {second}").wait_for(timeout=30000)
            page.locator("#em-train-cancel").click()
            wait_status(page, "cancelled", timeout_ms=120_000)
            screenshot(page, "train_tab_cancelled")
            assert real_errors(errors) == []
    with Store.open(session) as store:
        assert store.run(first)["status"] == "cancelled"
        assert store.run(second)["status"] == "cancelled"


def test_a_run_trained_outside_the_workbench_is_audited_from_the_runs_tab(session):
    with Store.open(session) as store:  # e.g. `earmark train` while no server ran: no audit, no gates
        trained = finetune(store, preset="demo-fast", overrides=["train.epochs=1", *LENIENT_GATES], init_from="none",
                           progress=False).run_id
    with running_server(session) as url, browser_page(url) as (page, errors):
        audits_listed = sum("(audit)" in run for run in dropdown_options(page, "em-review-run"))
        open_tab(page, "Runs")
        page.locator('#em-runs-table [data-testid="cell-0-0"]').get_by_text(trained).wait_for(timeout=30000)
        select_run(page, trained)
        page.locator("#em-runs-audit").click()
        page.locator(".toast-body").get_by_text("Enter your name").wait_for(timeout=30000)  # audits are signed
        set_annotator(page, "cy")
        page.locator("#em-runs-audit").click()
        page.locator("#em-runs-audit-message").get_by_text(f"audit of run {trained}").wait_for(timeout=30000)
        # The table gains the audit and then the gate outcome of the run (pass or fail), without a click.
        deadline = time.monotonic() + JOB_TIMEOUT_MS / 1000
        while not re.fullmatch(r"pass|fail \(\d+\)", gates_of(page, trained)):
            assert time.monotonic() < deadline, f"run {trained} still shows gates {gates_of(page, trained)!r}"
            page.wait_for_timeout(1000)
        # Review lists the new audit run (its predictions can be reviewed) without a reload.
        open_tab(page, "Review")
        wait_for_options(page, "em-review-run", lambda runs: sum("(audit)" in run for run in runs) == audits_listed + 1)
        open_tab(page, "Train")
        page.locator("#em-train-progress").get_by_text(f"audit of run {trained}").wait_for(timeout=30000)
        wait_status(page, "succeeded", timeout_ms=60_000)
        assert "audit" in page.locator('#em-train-jobs [data-testid="cell-0-1"]').inner_text()
        assert page.locator("#em-train-loss").get_by_text("train loss (per step)").count() >= 1  # the run's own curves
        screenshot(page, "runs_tab_audit_job")
        assert real_errors(errors) == []
    with Store.open(session) as store:
        audits = store.runs(kind="audit")
        assert (audits.parent_run_id == trained).sum() == 1 and store.run(trained)["status"] == "succeeded"


def test_the_runs_tab_opens_on_the_production_run(session):
    with Store.open(session) as store:
        production = store.production_run()
        if production is None:  # run on its own: production is the audited baseline (its lenient gates pass)
            outcome = promote(store, run_id=store.runs(kind="train").id.iloc[-1], actor="ana")
            assert outcome.promoted, outcome.lines()
            production = outcome.run_id
    with running_server(session) as url, browser_page(url, width=1440, height=1000) as (page, errors):
        with urllib.request.urlopen(url + "/config") as response:  # the runs table comes with the page itself
            served = json.load(response)
        table = next(c["props"] for c in served["components"] if c.get("props", {}).get("elem_id") == "em-runs-table")
        assert [production, "\u2605 production"] in [row[0:4:3] for row in table["value"]["data"]]
        open_tab(page, "Runs")  # nothing selected: the page load filled it
        page.locator("#em-runs-title").get_by_text(f"run {production}").wait_for(timeout=30000)
        page.wait_for_function("document.querySelectorAll('#em-runs-plots img').length === 3", timeout=30000)
        assert "emergency_sirens" in page.locator("#em-runs-metrics").inner_text()
        page.locator("#em-runs-production").get_by_text(f"Production: run {production}").wait_for(timeout=30000)
        screenshot(page, "runs_tab_first_view")
        screenshot(page, "runs_tab_1440", full_page=False)
        open_tab(page, "Train")
        page.wait_for_function("document.querySelector('#em-train-progress .em-job')?.dataset.status !== 'loading'",
                               timeout=30000)
        screenshot(page, "train_tab_1440", full_page=False)
        assert real_errors(errors) == []


def test_the_epochs_field_is_read_only_while_a_curriculum_decides(session):
    with running_server(session) as url, browser_page(url) as (page, errors):
        open_tab(page, "Train")
        epochs = page.locator("#em-train-train-epochs")
        pick_preset(page, "sirens-focused")  # four curriculum stages
        page.wait_for_function("document.querySelector('#em-train-train-epochs input').disabled", timeout=30000)
        assert "Set by the curriculum below: 4 stage(s), 4 epoch(s) in all" in epochs.inner_text()
        pick_preset(page, "demo-fast")  # no curriculum: the field applies
        page.wait_for_function("!document.querySelector('#em-train-train-epochs input').disabled", timeout=30000)
        assert "Set by the curriculum" not in epochs.inner_text()
        assert real_errors(errors) == []


def test_a_cancelled_run_resumes_from_the_runs_tab_in_the_same_run(session):
    from test_resume import interrupted_run  # tiny clips and model, four epochs, cancelled after the first
    with Store.open(session) as store:
        prepared, stopped = interrupted_run(store, after_epoch=1)
        assert stopped["status"] == "cancelled", stopped
        cancelled = prepared.run_id
        succeeded = store.runs(kind="train").query("status == 'succeeded'").id.iloc[0]
        runs_before = len(store.runs(kind="train"))
    resume = "#em-runs-resume"
    with running_server(session) as url, browser_page(url, width=1440, height=1000) as (page, errors):
        open_tab(page, "Runs")
        page.locator('#em-runs-table [data-testid="cell-0-0"]').get_by_text(cancelled).wait_for(timeout=30000)
        select_run(page, succeeded)  # a succeeded run has nothing to resume: no button
        assert not page.locator(resume).is_visible()
        select_run(page, cancelled)
        page.locator(resume).wait_for(state="visible", timeout=30000)
        title = page.locator("#em-runs-title").inner_text()
        assert "cancelled" in title and "audit the run to evaluate it; or resume it" in title, title
        screenshot(page, "runs_tab_resume", full_page=False)
        page.locator(resume).click()  # no name yet: refused in one line, the panels as they were
        page.locator(".toast-body").get_by_text("Enter your name").wait_for(timeout=30000)
        assert page.locator(resume).is_visible() and page.locator("#em-runs-audit-message").inner_text() == ""
        set_annotator(page, "dee")
        page.locator(resume).click()
        message = page.locator("#em-runs-audit-message")
        message.get_by_text(f"resume of run {cancelled}").wait_for(timeout=30000)
        assert "Train tab" in message.inner_text()
        page.locator(resume).wait_for(state="hidden", timeout=30000)  # queued: not offered twice
        # The same run id ends succeeded; the title and the table follow without a click.
        page.locator("#em-runs-title").get_by_text("succeeded").wait_for(timeout=JOB_TIMEOUT_MS)
        row = next(r for r in range(50) if run_cell(page, r, 0) == cancelled)
        page.wait_for_function(f"document.querySelector('#em-runs-table [data-testid=\"cell-{row}-2\"]')"
                               "?.innerText.trim() === 'succeeded'", timeout=60000)
        assert not page.locator(resume).is_visible()
        open_tab(page, "Train")
        page.locator("#em-train-progress").get_by_text(f"run {cancelled}", exact=True).wait_for(timeout=30000)
        wait_status(page, "succeeded")  # then its audit and gates, as after any fine-tune
        assert real_errors(errors) == []
    with Store.open(session) as store:
        run = store.run(cancelled)
        assert run["status"] == "succeeded" and run["error"] is None
        assert len(store.runs(kind="train")) == runs_before  # the same run, not a new one
        assert sorted(store.run_history(cancelled).epoch.unique()) == [1.0, 2.0, 3.0, 4.0]
