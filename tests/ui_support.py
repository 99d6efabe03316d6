"""Browser-test support: a real workbench server in a child process, driven by Debian's chromium.

Screenshots go to tests/artifacts/ (gitignored) so a person can look at every tab after a run.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic", "--no-first-run"]

needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/run installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(session_dir: Path, *, extra_args: list[str] | None = None, timeout_s: float = 90) -> Iterator[str]:
    """Start `app.py serve` on a free port; yield its URL; stop it (and check it did not crash)."""
    port = free_port()
    log_path = Path(session_dir) / "server-test.log"
    log = open(log_path, "w")
    process = subprocess.Popen([sys.executable, str(REPO / "app.py"), "serve", "--session", str(session_dir),
                                "--port", str(port), *(extra_args or [])], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"workbench server exited early:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"workbench server did not answer in {timeout_s} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@contextlib.contextmanager
def browser_page(url: str, *, width: int = 1600, height: int = 1100,
                 login: tuple[str, str] | None = None) -> Iterator[tuple[object, list[str]]]:
    """A chromium page on url, and the list that collects console errors and page errors;
    login (user, password) signs in on Gradio's login page first."""
    from playwright.sync_api import sync_playwright
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url, wait_until="load")
            if login:
                page.locator('input[data-testid="textbox"]').fill(login[0])
                page.locator('input[data-testid="password"]').fill(login[1])
                page.get_by_role("button", name="Login").click()
            page.wait_for_selector("#em-annotator", timeout=30000)
            yield page, errors
        finally:
            browser.close()


def screenshot(page, name: str, *, full_page: bool = True) -> Path:
    """The page as a PNG in tests/artifacts/; full_page=False keeps only what is above the fold."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def set_annotator(page, name: str) -> None:
    box = page.locator("#em-annotator textarea, #em-annotator input").first
    box.fill(name)
    box.press("Tab")


def open_tab(page, title: str) -> None:
    page.get_by_role("tab", name=title).click()
    page.wait_for_timeout(300)


def real_errors(errors: list[str]) -> list[str]:
    """Console errors that matter (favicon and similar noise filtered out)."""
    return [e for e in errors if "favicon" not in e.lower()]


def error_badges(page) -> int:
    """How many outputs show Gradio's red "Error" badge: a refused action must leave none."""
    return page.get_by_text("Error", exact=True).count()
