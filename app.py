"""Earmark's command line, and the workbench launcher: `python app.py` = `earmark serve`.

The CLI is thin: it parses arguments and calls pipeline functions. Errors the user can act on
are printed as one line ("earmark: error: ..."), never as a stack trace.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.store import StoreError

DEFAULT_SESSION = Path(__file__).resolve().parent / "sessions" / "demo"


def _cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.demo import build_demo_session
    summary = build_demo_session(session_dir=args.session, seed=args.seed, clips_per_class=args.clips_per_class,
                                 progress=not args.quiet)
    print("\n".join(summary.lines()))
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines.importing import ClassMap, import_dataset
    class_map = ClassMap.load(args.class_map, unmapped="keep" if args.keep_unmapped else None) if args.class_map else None
    with Store.open(args.session) as store:
        summary = import_dataset(store, args.source, layout=args.layout, name=args.name, class_map=class_map,
                                 root=args.root, group_pattern=args.group_pattern, seed=args.seed,
                                 probe_mode=args.probe, progress=not args.quiet)
    if args.json:
        print(json.dumps({k: v for k, v in summary.__dict__.items()}, default=str))
    else:
        print("\n".join(summary.lines()))
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines.stats import session_stats
    with Store.open(args.session, create=False) as store:
        stats = session_stats(store)
    if args.json:
        print(json.dumps(stats.to_dict(), default=str))
    else:
        print("\n".join(stats.lines(unreadable=args.unreadable)))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines.finetune import finetune
    with Store.open(args.session, create=False) as store:
        outcome = finetune(store, preset=args.preset, overrides=args.set, init_from=args.init_from,
                           processes=args.processes, progress=not (args.quiet or args.json))
    result = outcome.result
    line = {"run_id": outcome.run_id, "status": result["status"], "seconds": result.get("seconds"),
            "val_accuracy": result.get("accuracy", {}).get("val"),
            "val_accuracy_true": result.get("accuracy_true", {}).get("val"),
            "test_accuracy": result.get("accuracy", {}).get("test"), "error": result.get("error")}
    if args.json:
        print(json.dumps(line))
    else:
        parts = [f"run {line['run_id']}: {line['status']}"]
        if line["val_accuracy"] is not None:
            parts.append(f"val accuracy {line['val_accuracy']:.4f} (given labels)")
        if line["val_accuracy_true"] is not None:
            parts.append(f"{line['val_accuracy_true']:.4f} (true labels)")
        parts.append(f"{line['seconds'] or 0:.0f} s")
        print(", ".join(parts) + (f"; error: {line['error']}" if line["error"] else ""))
    return 0 if result["status"] == "succeeded" else 1


def _cmd_serve(args: argparse.Namespace) -> int:
    from workbench.server import serve
    session = Path(args.session)
    if session.resolve() == DEFAULT_SESSION.resolve():
        from pipelines.demo import prepare_demo_workbench
        for line in prepare_demo_workbench(session_dir=session):
            print(line, flush=True)
    elif not (session / "workbench.duckdb").exists():
        raise StoreError(f"no session at {session}: create it with 'earmark import --session {session} DATA' first")
    return serve(session_dir=session, host=args.host, port=args.port, auth=args.auth)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="earmark", description="Earmark: a labelling and audit workbench for audio classifiers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def session_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--session", default=str(DEFAULT_SESSION), help="session folder (default: sessions/demo)")

    p = sub.add_parser("demo", help="build the demo session (synthetic siren-task audio) if missing")
    session_arg(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic audio and splits")
    p.add_argument("--clips-per-class", type=int, default=100, help="clips per class (default 100)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("import", help="import a dataset (folder per class, CSV/Parquet manifest, ESC-50, UrbanSound8K)")
    session_arg(p)
    p.add_argument("source", help="dataset folder or manifest file")
    p.add_argument("--layout", default="auto", choices=["auto", "folder", "manifest", "esc50", "urbansound8k"])
    p.add_argument("--name", help="dataset name (default: the folder or manifest name)")
    p.add_argument("--class-map", help="YAML mapping source classes to task classes")
    p.add_argument("--keep-unmapped", action="store_true", help="keep classes the class map does not list (default: drop them)")
    p.add_argument("--root", help="folder that manifest paths are relative to (default: the manifest's folder)")
    p.add_argument("--group-pattern", help="regex on the file name whose first group is the source group (recording/speaker)")
    p.add_argument("--seed", type=int, default=0, help="seed of the grouped 60/20/20 split")
    p.add_argument("--probe", default="auto", choices=["auto", "full", "manifest"],
                   help="full: read every file; manifest: trust the manifest's duration/sample-rate columns")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser("stats", help="summarise a session: clips per class and split, unreadable files, decisions, runs")
    session_arg(p)
    p.add_argument("--unreadable", action="store_true", help="list every unreadable file with its reason")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_stats)

    from core.config import list_presets
    p = sub.add_parser("train", help="fine-tune on the session's current labels (a child process; Ctrl-C cancels cleanly)")
    session_arg(p)
    p.add_argument("--preset", default="demo-fast", help=f"preset name ({', '.join(list_presets())}) or a YAML path")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset value, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--init-from", default="production",
                   help="production (default), none, a run id, or a checkpoint folder")
    p.add_argument("--processes", type=int, default=1, help="training processes (Accelerate DDP); default 1")
    p.add_argument("--json", action="store_true", help="end with one JSON line instead of the text summary")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("serve", help="launch the workbench in the browser (default: the demo session)")
    session_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--auth", help="user:password, or a file holding such lines, to require a login")
    p.set_defaults(func=_cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv or ["serve"])
    if args.command is None:
        parser.print_help()
        return 2
    from core.audio import AudioError
    from core.config import ConfigError
    from pipelines.importing import DatasetImportError
    try:
        return args.func(args)
    except (StoreError, DatasetImportError, ConfigError, AudioError) as exc:
        print(f"earmark: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("earmark: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
