"""The audio LLM in a real browser against a real server (issue 15's workbench part): the
speech-llm-lora preset shows its LoRA and prompt fields, a base model that cannot be read is
explained in the form, Search prompts runs as a job with progress and names its best prompt, a
LoRA fine-tune then asks with it, and the Runs tab shows the search's ranked prompts and the
trained run's answer card with each clip's A/B probability of speech. A tiny random Qwen2-Audio
stands in for the 7B base: nothing is downloaded."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import copy_session
from llm_support import build_llm_session
from pipelines.tiny_audio_llm import save_tiny_audio_llm
from test_ui_train_runs import pick_preset, select_run, wait_status
from ui_support import (browser_page, error_badges, needs_chromium, open_tab, real_errors, running_server, screenshot,
                        set_annotator)

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]
JOB_TIMEOUT_MS = 180_000


@pytest.fixture
def built(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(the 48-clip SPEECH / NONSPEECH session, a tiny Qwen2-Audio folder); the server gets an
    empty Hugging Face cache, so the preset's own hub id is one it cannot read."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    session = build_llm_session(tmp_path / "data")
    return copy_session(session, tmp_path / "session"), save_tiny_audio_llm(tmp_path / "base")


def fill(page, key: str, value: str) -> None:
    """Type into a Train form field named by its dotted key and leave it (which previews the change).
    The last character is typed as a key press: a text box's input event comes from the keyboard."""
    box = page.locator(f"#em-train-{key.replace('.', '-').replace('_', '-')}").locator("input, textarea").first
    box.fill(value[:-1])
    box.press_sequentially(value[-1])
    box.press("Tab")


def untick(page, key: str) -> None:
    page.locator(f"#em-train-{key.replace('.', '-').replace('_', '-')} input").uncheck()


def test_search_prompts_fine_tune_with_lora_and_read_both_runs(built):
    session, base = built
    with running_server(session) as url, browser_page(url, width=1440, height=1000) as (page, errors):
        set_annotator(page, "ana")
        open_tab(page, "Train")
        assert not page.locator("#em-train-llm").is_visible() and not page.locator("#em-train-search").is_visible()
        pick_preset(page, "speech-llm-lora")
        llm = page.locator("#em-train-llm")
        llm.wait_for(state="visible", timeout=30000)
        for key in ("model.lora.rank", "model.speech_llm.prompt_from_search", "model.speech_llm.prompt"):
            assert key in llm.inner_text()  # each field labelled with its dotted key, its help below it
        assert "Also put LoRA adapters on the language model's MLP projections" in llm.inner_text()
        # The preset's hub id is not in this machine's cache: said in the form, in one line.
        base_line = page.locator("#em-train-llm-base")
        base_line.get_by_text("base: model.pretrained: 'Qwen/Qwen2-Audio-7B-Instruct' is not a local folder and is "
                              "not in the local Hugging Face cache").wait_for(timeout=30000)
        screenshot(page, "speech_llm_train_missing_base", full_page=False)

        # Point it at the tiny base, keep the search small (the preset's prompts, no rephrasings or proposals).
        fill(page, "model.pretrained", str(base))
        base_line.get_by_text(f"base: Qwen2-Audio at {base}").wait_for(timeout=30000)
        untick(page, "model.speech_llm.template_variants")
        fill(page, "model.speech_llm.generated_prompts", "0")
        fill(page, "model.speech_llm.free_generation_tokens", "0")
        message = page.locator("#em-train-message")
        message.get_by_text("model.speech_llm.free_generation_tokens=0").wait_for(timeout=30000)
        note = page.locator("#em-train-llm-prompt-note")
        assert "No prompt search of this base model yet" in note.inner_text()

        # Search prompts: a job with progress (prompt i of n, answers scored), then its best prompt.
        page.locator("#em-train-search").click()
        message.get_by_text("queued").wait_for(timeout=30000)
        search = re.search(r"prompt search (\S+) queued", message.inner_text()).group(1)
        progress = page.locator("#em-train-progress")
        progress.get_by_text(re.compile(r"prompt \d of 5 \(hand:\d\) · \d+ / 60 clip answers scored")).wait_for(
            timeout=JOB_TIMEOUT_MS)
        screenshot(page, "speech_llm_search_progress", full_page=False)
        wait_status(page, "succeeded", timeout_ms=JOB_TIMEOUT_MS)
        best = progress.locator(".em-search-best")
        assert re.match(r"Best prompt \(hand:\d, A = speech\): dev balanced accuracy \d+\.\d% on 12 val clips",
                        best.inner_text())
        note.get_by_text(f"A fine-tune asks with the best prompt of prompt search {search}").wait_for(timeout=30000)
        assert "prompt-search" in page.locator("#em-train-jobs").inner_text()
        screenshot(page, "speech_llm_search_done")

        # Fine-tune: LoRA on the tiny base, two short epochs, asking with the searched prompt.
        fill(page, "train.epochs", "2")
        fill(page, "train.batch_size", "8")
        fill(page, "train.lr", "0.03")
        message.get_by_text("train.lr=0.03").wait_for(timeout=30000)
        page.locator("#em-train-launch").click()
        message.get_by_text("queued").wait_for(timeout=30000)
        assert f"asks with the best prompt of prompt search {search}" in message.inner_text()
        trained = re.search(r"run (\S+-train-\S+) queued", message.inner_text()).group(1)
        progress.get_by_text(f"run {trained}").wait_for(timeout=30000)  # no longer the search's (succeeded) job
        wait_status(page, "succeeded", timeout_ms=JOB_TIMEOUT_MS)
        page.locator("#em-train-gates").wait_for(state="visible", timeout=30000)  # its gates were judged

        # Runs: the search's ranked prompts in place of plots, then the run's card and A/B probabilities.
        open_tab(page, "Runs")
        page.locator('#em-runs-table [data-testid$="-0"]').get_by_text(trained, exact=True).wait_for(timeout=30000)
        select_run(page, search)
        shown = page.locator("#em-runs-llm-markdown")
        shown.get_by_text("Ranked prompts").wait_for(timeout=30000)
        assert re.search(r"Best prompt \(hand:\d, A = speech\)\s+Dev balanced accuracy \d+\.\d%", shown.inner_text())
        assert page.locator("#em-runs-llm-markdown table tr").count() == 6  # the header and five prompts
        assert not page.locator("#em-runs-split-views").is_visible()
        screenshot(page, "speech_llm_runs_prompt_search")

        select_run(page, trained)
        shown.get_by_text("Answer card (audio LLM)").wait_for(timeout=30000)
        assert f"base model: {base}" in shown.inner_text()
        table = page.locator("#em-runs-llm-predictions")
        table.get_by_text("p(A) = p(SPEECH)").wait_for(timeout=30000)
        assert page.locator("#em-runs-split-views").is_visible()
        assert page.locator("#em-runs-compare-detectors").is_visible()  # beside the CNN and the VADs next
        table.locator('[data-testid="cell-0-0"]').click()
        player = page.locator("#em-runs-llm-player")
        player.locator("audio").wait_for(state="attached", timeout=30000)
        assert re.match(r"clip \d+: label (SPEECH|NONSPEECH); the model says (SPEECH|NONSPEECH), p\(speech\) \d\.\d{3}",
                        player.inner_text())
        shown.scroll_into_view_if_needed()
        screenshot(page, "speech_llm_runs_answer_card", full_page=False)
        assert error_badges(page) == 0 and real_errors(errors) == []
