"""The Review tab in a real browser against a real server, plus the server's safety rules."""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from conftest import copy_session
from core.store import Store
from ui_support import browser_page, error_badges, needs_chromium, real_errors, running_server, screenshot, set_annotator

pytestmark = [pytest.mark.browser, needs_chromium]


@pytest.fixture(scope="module")
def review_session(tmp_path_factory, trained_demo_session) -> Path:
    """A small demo session with a trained run and a quarantine queue of the clips it gets wrong."""
    session = copy_session(trained_demo_session, tmp_path_factory.mktemp("review") / "session")
    with Store.open(session) as store:
        run = store.runs(kind="train").id.iloc[0]
        predictions = store.predictions(run).sort_values("confidence")
        picked = predictions.head(6)
        store.raise_quarantine(pd.DataFrame({"clip_id": picked.clip_id, "method": "extreme_off", "audit_run_id": run,
                                             "reason": "given " + picked.label + ", model says " + picked.predicted,
                                             "score": 1 - picked.confidence}), annotator="audit")
    return session


# The clip on screen: the Review tab holds the next few clip views, hidden, and shows one.
SHOWN = "(document.querySelector('#em-review-stage .em-slot:not([hidden]) .em-player') || {dataset: {}}).dataset.clip"
SHOWN_AUDIO = "document.querySelector('#em-review-stage .em-slot:not([hidden]) .em-audio')"
SETTLED = "window.emReview.pending.length === 0 && !window.emReview.inflight"  # every key press answered


def current_clip(page) -> int:
    return int(page.locator("#em-review-stage .em-slot:not([hidden]) .em-player").get_attribute("data-clip"))


def quarantine(session: Path, n: int, *, score: float, reason: str) -> list[int]:
    """Queue n clips not quarantined yet (a score above the audit's 0..1 puts them first), so a
    test starts on clips no other test decided; returns them in queue order."""
    with Store.open(session) as store:
        run = store.runs().id.iloc[0]
        asked = set(store.quarantine_queue(include_resolved=True).clip_id)
        fresh = store.predictions(run).loc[lambda p: ~p.clip_id.isin(asked)].head(n)
        store.raise_quarantine(pd.DataFrame({"clip_id": fresh.clip_id, "method": "manual", "audit_run_id": run,
                                             "reason": reason, "score": score}), annotator="audit")
    return sorted(fresh.clip_id.astype(int).tolist())


def test_review_by_keyboard_records_decisions_and_undo(review_session):
    with running_server(review_session) as url, browser_page(url) as (page, errors):
        set_annotator(page, "ana")
        page.get_by_role("button", name="Load queue").click()
        page.wait_for_selector(".em-player", timeout=30000)
        first = current_clip(page)
        screenshot(page, "review_tab")

        page.locator("body").click(position={"x": 5, "y": 5})
        page.keyboard.press("2")  # non_siren_alert
        page.wait_for_function(f"{SHOWN} != '{first}'", timeout=20000)
        assert "tagged non_siren_alert" in page.locator("#em-review-message").inner_text()
        second = current_clip(page)

        page.keyboard.press("]")  # faster
        rate = page.evaluate(f"{SHOWN_AUDIO}.playbackRate")
        assert rate == pytest.approx(1.25)
        page.keyboard.press(" ")  # play
        page.wait_for_function(f"{SHOWN_AUDIO}.currentTime > 0.2", timeout=15000)
        page.keyboard.press(" ")  # pause

        page.keyboard.press("u")  # undo ana's last decision: goes back to the first clip
        page.wait_for_function(f"{SHOWN} == '{first}'", timeout=20000)
        assert "undid decision" in page.locator("#em-review-message").inner_text()
        history = page.locator("#em-review-stage .em-slot:not([hidden]) .em-slot-history")
        assert "undo" in history.inner_text() and history.locator(".em-undone").count() == 1  # fresh, not stale
        page.keyboard.press("j")
        page.wait_for_function(f"{SHOWN} == '{second}'", timeout=20000)
        screenshot(page, "review_tab_after_undo")
        assert real_errors(errors) == []

    with Store.open(review_session) as store:
        log = store.decisions(annotator="ana")
        assert list(log.action) == ["undo", "tag"]
        tag = log[log.action == "tag"].iloc[0]
        assert (tag.clip_id, tag.tag, bool(tag.undone)) == (first, "non_siren_alert", True)
        assert store.clip_state(first)["quarantined"]  # the undo put it back in the queue


def test_a_decision_without_a_name_is_refused_with_a_message(review_session):
    with running_server(review_session) as url, browser_page(url) as (page, errors):
        page.get_by_role("button", name="Load queue").click()
        page.wait_for_selector(".em-player", timeout=30000)
        shown = current_clip(page)
        page.get_by_role("button", name="X  exclude").click()
        page.get_by_text("Enter your name").first.wait_for(timeout=10000)
        page.wait_for_timeout(500)
        assert "Traceback" not in page.content()
        assert error_badges(page) == 0 and current_clip(page) == shown  # the refusal left the pane as it was
        assert page.locator(".em-spec-img").first.is_visible()
    with Store.open(review_session) as store:
        assert store.decisions(annotator="").empty


def test_keys_60_ms_apart_both_count_and_the_queue_ends_without_a_duplicate(review_session):
    queue = quarantine(review_session, 4, score=2.0, reason="quick keys")
    with running_server(review_session) as url, browser_page(url, width=1440, height=1000) as (page, errors):
        page.wait_for_selector("#em-review-stage .em-player", timeout=60000)  # the default queue loads on its own
        assert page.evaluate("document.activeElement.closest('#em-annotator') !== null")  # and the name is asked first
        assert "Enter your name" in page.locator("#em-review-message").inner_text()
        legend = page.locator(".em-keys").inner_text()
        assert "1-6 tag" in legend and "9" not in legend  # only the keys that have a rule
        screenshot(page, "review_tab_1440")
        set_annotator(page, "bo")
        page.get_by_label("reason contains").fill("quick keys")
        page.get_by_role("button", name="Load queue").click()
        page.wait_for_function(f"{SHOWN} == '{queue[0]}' && window.emReview.ids.length === {len(queue)}", timeout=30000)
        page.locator("body").click(position={"x": 5, "y": 5})
        page.keyboard.press("7")  # no rule on 7: nothing happens
        page.get_by_role("button", name="Relabel").click()  # "relabel to" starts empty, so Relabel asks
        page.locator("#em-review-message").get_by_text("Choose a class in 'relabel to' first.").wait_for(timeout=5000)
        assert current_clip(page) == queue[0]

        page.locator("body").click(position={"x": 5, "y": 5})  # out of the class box Relabel focused
        page.keyboard.press("2")
        page.wait_for_timeout(60)
        page.keyboard.press("3")
        assert current_clip(page) == queue[2]  # each press advanced at once, before the server answered
        for clip in queue[2:]:
            page.wait_for_function(f"{SHOWN} == '{clip}'", timeout=30000)
            page.keyboard.press("1")
        end = page.locator("#em-review-stage .em-end")
        end.get_by_text(f"{len(queue)} of {len(queue)} reviewed").wait_for(timeout=30000)
        page.keyboard.press("1")  # nothing left on screen to decide twice
        assert "The queue is done" in page.locator("#em-review-message").inner_text()
        screenshot(page, "review_tab_end_of_queue")
        page.keyboard.press("k")  # back to the last clip: the same key again records nothing new
        page.wait_for_function(f"{SHOWN} == '{queue[-1]}'", timeout=30000)
        page.keyboard.press("1")
        page.locator("#em-review-message").get_by_text("nothing new recorded").wait_for(timeout=30000)
        page.wait_for_function(SETTLED, timeout=30000)
        assert error_badges(page) == 0 and real_errors(errors) == []
    with Store.open(review_session) as store:
        tags = store.decisions(annotator="bo").sort_values("id")
        assert tags[["clip_id", "action", "tag"]].values.tolist() == [
            [queue[0], "tag", "non_siren_alert"], [queue[1], "tag", "ambient"], *([c, "tag", "true_siren"] for c in queue[2:])]


def test_a_write_that_conflicts_puts_the_clip_back_with_the_reason(review_session):
    contested, after = quarantine(review_session, 2, score=3.0, reason="contested")
    with running_server(review_session) as url, browser_page(url) as (page, errors):
        page.wait_for_function(f"{SHOWN} == '{contested}'", timeout=60000)
        set_annotator(page, "ana")
        page.locator("body").click(position={"x": 5, "y": 5})
        other = page.context.browser.new_context().new_page()  # bob, in a browser session of his own
        other.goto(url)
        other.wait_for_function(f"{SHOWN} == '{contested}'", timeout=60000)
        set_annotator(other, "bob")
        other.locator("body").click(position={"x": 5, "y": 5})
        other.keyboard.press("4")
        other.wait_for_function(SETTLED, timeout=30000)

        page.keyboard.press("2")  # ana still sees the clip as it was before bob's tag
        assert current_clip(page) == after
        page.wait_for_function(f"{SHOWN} == '{contested}'", timeout=30000)  # refused: put back
        message = page.locator("#em-review-message").inner_text()
        assert "already decided by bob" in message and "shown again" in message
        assert "bob" in page.locator("#em-review-stage .em-slot:not([hidden]) .em-slot-history").inner_text()
        assert error_badges(page) == 0 and real_errors(errors) == []
        screenshot(page, "review_conflict_put_back")
    with Store.open(review_session) as store:
        tags = store.decisions(clip_id=contested)
        assert tags[tags.action == "tag"].annotator.tolist() == ["bob"]


def test_audio_is_served_only_from_dataset_roots_and_auth_is_enforced(review_session, tmp_path):
    with Store.open(review_session) as store:
        clip = store.clips().iloc[0]
        inside = Path(clip.dataset_root) / clip.path
    outside = tmp_path / "secret.wav"
    outside.write_bytes(inside.read_bytes())
    escape = inside.parent / "escape.wav"  # inside a dataset root, pointing out of it
    escape.symlink_to(outside)
    with running_server(review_session) as url:
        ok = urllib.request.urlopen(url + "/gradio_api/file=" + urllib.parse.quote(str(inside)))
        assert ok.status == 200 and len(ok.read()) == inside.stat().st_size
        for path in (outside, escape):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(url + "/gradio_api/file=" + urllib.parse.quote(str(path)))
            assert refused.value.code in (403, 404), path
    escape.unlink()
    with running_server(review_session, extra_args=["--auth", "ana:s3cret"]) as url:
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url + "/gradio_api/file=" + urllib.parse.quote(str(inside)))
        assert denied.value.code in (401, 403)


def test_gradio_usage_analytics_are_off_in_the_served_config(review_session):
    with running_server(review_session) as url:
        with urllib.request.urlopen(url + "/config") as response:
            assert json.load(response)["analytics_enabled"] is False


def test_with_a_login_the_logged_in_user_signs_and_the_name_box_shows_it_read_only(review_session):
    with running_server(review_session, extra_args=["--auth", "dora:s3cret"]) as url, \
            browser_page(url, login=("dora", "s3cret")) as (page, errors):
        box = page.locator("#em-annotator textarea, #em-annotator input").first
        page.wait_for_function("document.querySelector('#em-annotator textarea, #em-annotator input').value === 'dora'",
                               timeout=30000)
        assert not box.is_editable()
        page.get_by_role("button", name="Load queue").click()
        page.wait_for_selector(".em-player", timeout=30000)
        shown = current_clip(page)
        page.get_by_role("button", name="X  exclude").click()
        page.locator("#em-review-message").get_by_text(f"clip {shown}: excluded").wait_for(timeout=30000)
        screenshot(page, "review_tab_signed_in")
        assert real_errors(errors) == []
    with Store.open(review_session) as store:
        signed = store.decisions(annotator="dora")
        assert signed[["clip_id", "action"]].values.tolist() == [[shown, "exclude"]]


def test_review_follows_relabel_rules_edited_in_the_data_tab_without_a_restart(review_session, tmp_path):
    from ui_support import open_tab
    session = copy_session(review_session, tmp_path / "session")  # its own rules: the module's stay as seeded
    queue = quarantine(session, 2, score=5.0, reason="new keys")

    def fill(field: str, text: str) -> None:
        page.locator(f"#{field} textarea, #{field} input").first.fill(text)

    with running_server(session) as url, browser_page(url, width=1440, height=1000) as (page, errors):
        page.wait_for_selector("#em-review-stage .em-player", timeout=60000)
        assert page.locator("#em-tag-8").count() == 0 and page.locator("#em-tag-3").is_visible()
        set_annotator(page, "eve")
        open_tab(page, "Data")  # a new rule on key 8, and ambient's key moved from 3 to 9
        fill("em-rule-tag", "horn_like")
        page.locator("#em-rule-target input").click()
        page.get_by_role("option", name="alert_sounds", exact=True).click()
        fill("em-rule-hotkey", "8")
        page.locator("#em-rule-save").click()
        message = page.locator("#em-rule-message")
        message.get_by_text("rule horn_like -> relabel alert_sounds, release added").wait_for(timeout=20000)
        page.locator("#em-rules-table").get_by_text("ambient", exact=True).click()
        page.wait_for_function("document.querySelector('#em-rule-tag textarea, #em-rule-tag input').value === 'ambient'",
                               timeout=20000)
        fill("em-rule-hotkey", "9")
        page.locator("#em-rule-save").click()
        message.get_by_text("rule ambient -> relabel environmental_sounds, release changed").wait_for(timeout=20000)

        open_tab(page, "Review")  # no restart, no reload: the buttons, legend and keys follow the store
        page.locator("#em-tag-8").get_by_text("horn_like").wait_for(timeout=20000)
        page.locator("#em-tag-9").get_by_text("ambient").wait_for(timeout=20000)
        assert page.locator("#em-tag-3").count() == 0
        legend = page.locator("#em-review-keys").inner_text()
        assert "8" in legend and "9" in legend and "3" not in legend.split("tag")[0], legend
        page.get_by_label("reason contains").fill("new keys")
        page.get_by_role("button", name="Load queue").click()
        page.wait_for_function(f"{SHOWN} == '{queue[0]}' && window.emReview.ids.length === {len(queue)}", timeout=30000)
        page.locator("body").click(position={"x": 5, "y": 5})
        page.keyboard.press("8")
        page.wait_for_function(f"{SHOWN} == '{queue[1]}'", timeout=30000)
        page.locator("#em-review-message").get_by_text(f"clip {queue[0]}: tagged horn_like").wait_for(timeout=30000)
        page.keyboard.press("9")
        page.locator("#em-review-message").get_by_text(f"clip {queue[1]}: tagged ambient").wait_for(timeout=30000)
        page.wait_for_function(SETTLED, timeout=30000)
        screenshot(page, "review_tab_rules_edited", full_page=False)
        assert error_badges(page) == 0 and real_errors(errors) == []
    with Store.open(session) as store:
        tags = store.decisions(annotator="eve").sort_values("id")
        assert tags[["clip_id", "action", "tag"]].values.tolist() == [[queue[0], "tag", "horn_like"],
                                                                       [queue[1], "tag", "ambient"]]
        assert store.clip_state(queue[0])["label"] == "alert_sounds"
        assert store.clip_state(queue[1])["label"] == "environmental_sounds"
