"""The `earmark` command line as a user meets it: one-line errors, nothing left behind by a failed
import, --json output that parses, read-only commands on a held session, and the serve flags.

Commands run in-process through app.main (fast); one test runs the real entry point as a
subprocess, where --json's promise (stdout carries only the JSON) matters most."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import app
from conftest import held_by_another_process, tone, write_wav

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, str(REPO / "app.py")]


def earmark_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, cwd=REPO, timeout=300)


@pytest.fixture
def earmark(capsys):
    """Run `earmark ARGS` in this process: what it returned and printed, shaped like a finished process."""
    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = app.main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["earmark", *args], code, out, err)
    return run


def one_line_error(done: subprocess.CompletedProcess, start: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith(f"earmark: error: {start}") and done.stderr.count("\n") == 1, done.stderr


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "ds"
    for label, freq in (("siren", 900), ("beep", 600)):
        for i in range(5):
            write_wav(root / label / f"{label}{i}.wav", tone(freq + i, seconds=0.3))
    return root


def test_a_session_path_that_is_a_file_is_one_line(tmp_path, dataset, earmark):
    taken = tmp_path / "session.txt"
    taken.write_text("mine")
    one_line_error(earmark("import", "--session", str(taken), str(dataset), "--quiet"),
                   f"{taken} is a file, not a session folder")
    assert taken.read_text() == "mine"


def test_a_failed_import_creates_no_session(tmp_path, earmark):
    (tmp_path / "m.csv").write_text("file,other\na.wav,1\n")
    for source, message in ((tmp_path / "missing", "nothing to import"),
                            (tmp_path / "m.csv", "manifest m.csv needs a label column")):
        session = tmp_path / f"new-session-{source.name}"
        one_line_error(earmark("import", "--session", str(session), str(source)), message)
        assert not session.exists()


def test_json_commands_print_only_one_json_object_on_stdout(tmp_path, dataset):
    session = tmp_path / "session"
    done = earmark_process("import", "--session", str(session), str(dataset), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["added"] == 10  # the whole of stdout is the object; the bars went to stderr
    done = earmark_process("stats", "--session", str(session), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["clips"] == 10


def test_stats_and_export_work_while_another_process_holds_the_session(tmp_path, dataset, earmark):
    session = tmp_path / "session"
    assert earmark("import", "--session", str(session), str(dataset), "--quiet").returncode == 0
    with held_by_another_process(session) as pid:
        before = sorted((p.name, p.stat().st_mtime_ns) for p in session.iterdir())
        held = earmark("import", "--session", str(session), str(dataset))  # a writing command is still refused
        one_line_error(held, f"session {session.resolve()} is open in another process (pid {pid})")
        stats = earmark("stats", "--session", str(session), "--json")
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout)["decisions"] == 1 and json.loads(stats.stdout)["relabelled"] == 1
        out = tmp_path / "manifest.csv"
        export = earmark("export", "--session", str(session), "--out", str(out))
        assert export.returncode == 0, export.stderr
        exported = pd.read_csv(out)
        assert len(exported) == 10 and exported.label.tolist().count("changed_by_holder") == 1
        assert exported.last_annotator.dropna().tolist() == ["holder"]
        assert sorted((p.name, p.stat().st_mtime_ns) for p in session.iterdir()) == before  # nothing written


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "workbench.example.org"])
def test_serving_beyond_this_machine_without_a_login_is_refused(tmp_path, capsys, host):
    assert app.main(["serve", "--session", str(tmp_path / "s"), "--host", host]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"earmark: error: --host {host} serves this session") and error.count("\n") == 1
    assert "--auth user:password" in error and "--no-auth" in error


@pytest.mark.parametrize("flags", [["--host", "0.0.0.0", "--no-auth"], ["--host", "0.0.0.0", "--auth", "ana:pw"],
                                   ["--host", "127.0.0.1"], ["--host", "localhost"], ["--host", "::1"]])
def test_a_login_an_explicit_no_auth_or_a_loopback_host_passes_the_check(tmp_path, capsys, flags):
    # the next check, on the session itself, is what stops these: the host was accepted
    assert app.main(["serve", "--session", str(tmp_path / "s"), *flags]) == 2
    assert capsys.readouterr().err.startswith(f"earmark: error: no session at {tmp_path / 's'}")
