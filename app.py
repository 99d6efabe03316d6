"""Earmark's command line, and the workbench launcher: `python app.py` = `earmark serve`.

The CLI is thin: it parses arguments and calls pipeline functions. Errors the user can act on
are printed as one line ("earmark: error: ..."), never as a stack trace.
"""
from __future__ import annotations

import argparse
import contextlib
import getpass
import ipaddress
import json
import sys
import typing
from collections.abc import Iterator
from pathlib import Path

from core.config import AuditConfig, ComparisonConfig, DuplicatesConfig, HygieneConfig, list_presets
from core.uncertainty import InboxConfig
from core.store import StoreError, session_exists

DEFAULT_SESSION = Path(__file__).resolve().parent / "sessions" / "demo"
SharedOptions = dict[str, argparse.ArgumentParser]  # option name -> parent parser declaring it


def _cmd_demo(args: argparse.Namespace) -> int:
    wrong = "--clips-per-class" if args.task == "speech" else "--clips-per-cell"
    if getattr(args, wrong.lstrip("-").replace("-", "_")) is not None:
        print(f"earmark: error: {wrong} does not apply to the {args.task} demo", file=sys.stderr)
        return 2
    if args.task == "speech":
        return _speech_demo(args)
    from pipelines.demo import build_demo_session
    summary = build_demo_session(session_dir=args.session, seed=args.seed, clips_per_class=args.clips_per_class or 100,
                                 progress=not args.quiet)
    print("\n".join(summary.lines()))
    return 0


def _speech_demo(args: argparse.Namespace) -> int:
    from pipelines.factorial_config import FactorialConfig
    from pipelines.speech_demo import DEFAULT_SPEECH_SESSION, build_speech_demo_session
    session = DEFAULT_SPEECH_SESSION if args.session == str(DEFAULT_SESSION) else args.session  # never the siren demo's
    config = FactorialConfig(seed=args.seed, **({"clips_per_cell": args.clips_per_cell} if args.clips_per_cell else {}))
    summary = build_speech_demo_session(session_dir=session, config=config, progress=not args.quiet)
    print("\n".join(summary.lines()))
    return 0


def _register_demo(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    p = sub.add_parser("demo", help="build a demo session if missing: the siren task (sessions/demo) or the speech / "
                                    "non-speech task (--task speech: sessions/speech)",
                       parents=_parents(shared, "session", "seed", "quiet"))
    p.add_argument("--task", choices=["sirens", "speech"], default="sirens",
                   help="sirens: 600 synthetic siren-task clips (default); speech: a factorial SPEECH / NONSPEECH set "
                        "of 1,000 short clips (4 durations x 5 SNRs x 2 classes x 25) with planted hygiene faults")
    p.add_argument("--clips-per-class", type=int, help="siren demo: clips per class (default 100)")
    p.add_argument("--clips-per-cell", type=int, help="speech demo: clips per duration x SNR x class cell (default 25)")
    p.set_defaults(func=_cmd_demo)


FACTORIAL_FLAGS = ("clips_per_cell", "sample_rate_hz", "seed")  # the FactorialConfig fields with a flag of their own


def _cmd_build_factorial(args: argparse.Namespace) -> int:
    from pipelines.factorial import build_factorial
    from pipelines.factorial_config import FactorialConfig
    flags = {name: getattr(args, name) for name in FACTORIAL_FLAGS if getattr(args, name) is not None}
    config = FactorialConfig().with_overrides(args.set).with_overrides(flags)
    summary = build_factorial(speech=args.speech, nonspeech=args.nonspeech, noise_bank=args.noise_bank,
                              out_dir=args.out, config=config, session=args.session,
                              progress=not (args.quiet or args.json))
    if args.json:
        imported = summary.imported and {k: v for k, v in summary.imported.__dict__.items()}
        print(json.dumps({"out_dir": str(summary.out_dir), "clips": summary.clips, "reused": summary.reused,
                          "seconds": summary.seconds, "skipped": summary.skipped, "imported": imported},
                         default=str), file=args.stdout)
    else:
        print("\n".join(summary.lines()))
    return 0


def _register_build_factorial(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    from pipelines.factorial_config import FactorialConfig
    helps = FactorialConfig.field_help()
    p = sub.add_parser("build-factorial", help="build a SPEECH / NONSPEECH set at every duration x SNR cell (B7), split "
                                               "by source file and speaker, and import it into --session",
                       parents=_parents(shared, "set", "json", "quiet"))
    p.add_argument("--speech", action="append", required=True, metavar="SRC",
                   help="folder (a sub-folder per speaker) or manifest of speech recordings (repeatable)")
    p.add_argument("--nonspeech", action="append", required=True, metavar="SRC",
                   help="folder or manifest of non-speech recordings (repeatable)")
    p.add_argument("--noise-bank", required=True, metavar="DIR", help="background sounds in MUSAN layout: music/, "
                                                                      "speech/, noise/")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the clips and manifest into")
    p.add_argument("--session", help="session folder to import the set into (default: none, only write it)")
    defaults = {name: field.default for name, field in FactorialConfig.__dataclass_fields__.items()}
    for name in FACTORIAL_FLAGS:
        p.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"{helps[name]} (default {defaults[name]})")
    p.epilog = "other options with --set KEY=VALUE: " + ", ".join(sorted(set(helps) - set(FACTORIAL_FLAGS)))
    p.set_defaults(func=_cmd_build_factorial)


def _cmd_import(args: argparse.Namespace) -> int:
    from core.store import Store
    from core.relabel_rules import load_rules, seed_rules
    from pipelines.importing import ClassMap, discover_dataset, import_discovered
    class_map = ClassMap.load(args.class_map, unmapped="keep" if args.keep_unmapped else None) if args.class_map else None
    # Discovered before the session is opened: a source that cannot be imported creates no session.
    found = discover_dataset(args.source, layout=args.layout, name=args.name, class_map=class_map, root=args.root,
                             group_pattern=args.group_pattern)
    rules = load_rules(args.relabel_rules) if args.relabel_rules else []  # a bad file also creates no session
    with Store.open(args.session) as store:
        summary = import_discovered(store, found, seed=args.seed, probe_mode=args.probe, progress=not args.quiet)
        added = seed_rules(store, rules)
    if rules and not args.json:
        print(f"relabel rules: {added} of {len(rules)} added from {args.relabel_rules} (tags the session had are kept)")
    if args.json:
        print(json.dumps({k: v for k, v in summary.__dict__.items()}, default=str), file=args.stdout)
    else:
        print("\n".join(summary.lines()))
    return 0


def _register_import(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    p = sub.add_parser("import", help="import a dataset (folder per class, CSV/Parquet manifest, ESC-50, UrbanSound8K)",
                       parents=_parents(shared, "session", "seed", "json", "quiet"))
    p.add_argument("source", help="dataset folder or manifest file")
    p.add_argument("--layout", default="auto", choices=["auto", "folder", "manifest", "esc50", "urbansound8k"])
    p.add_argument("--name", help="dataset name (default: the folder or manifest name)")
    p.add_argument("--class-map", help="YAML mapping source classes to task classes")
    p.add_argument("--keep-unmapped", action="store_true", help="keep classes the class map does not list (default: drop them)")
    p.add_argument("--root", help="folder that manifest paths are relative to (default: the manifest's folder)")
    p.add_argument("--group-pattern", help="regex on the file name whose first group is the source group (recording/speaker)")
    p.add_argument("--probe", default="auto", choices=["auto", "full", "manifest"],
                   help="full: read every file; manifest: trust the manifest's duration/sample-rate columns")
    p.add_argument("--relabel-rules", metavar="FILE",
                   help="a relabel rules YAML (data/relabel_rules/*.yaml, or the .rules.yaml `earmark export` writes) "
                        "whose tags the session does not have yet are added")
    p.set_defaults(func=_cmd_import)


def _cmd_stats(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines.stats import session_stats
    with Store.open_snapshot(args.session) as store:  # works while a server or job holds the session
        stats = session_stats(store)
    if args.json:
        print(json.dumps(stats.to_dict(), default=str), file=args.stdout)
    else:
        print("\n".join(stats.lines(unreadable=args.unreadable)))
    return 0


def _register_stats(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    p = sub.add_parser("stats", help="summarise a session: clips per class and split, unreadable files, decisions, runs",
                       parents=_parents(shared, "session", "json"))
    p.add_argument("--unreadable", action="store_true", help="list every unreadable file with its reason")
    p.set_defaults(func=_cmd_stats)


def _cmd_export(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines.export import default_export_path, export_manifest
    with Store.open_snapshot(args.session) as store:  # works while a server or job holds the session
        try:
            path = args.out or default_export_path(store, format=args.format or "csv", as_of=args.as_of)
            summary = export_manifest(store, path, format=args.format, as_of=args.as_of)
        except ValueError as exc:
            print(f"earmark: error: {exc}", file=sys.stderr)
            return 2
    print("\n".join(summary.lines()))
    return 0


def _register_export(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    p = sub.add_parser("export", help="write the corrected manifest: current labels, exclusions, decision provenance",
                       parents=_parents(shared, "session"))
    p.add_argument("--out", help="file to write (default: SESSION/exports/manifest-asof-ID.FORMAT)")
    p.add_argument("--format", choices=["csv", "parquet"], help="default: from --out's suffix, else csv")
    p.add_argument("--as-of", type=int, help="decision id to rebuild the labels at (default: now, the latest)")
    p.set_defaults(func=_cmd_export)


def _cmd_train(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines import finetune as runs
    if args.resume and (args.set or args.init_from is not None):
        print(f"earmark: error: {'--set' if args.set else '--init-from'} does not apply to --resume: a resumed run "
              "continues with the config and start it was launched with", file=sys.stderr)
        return 2
    if args.seeds is not None:
        return _train_seeds(args)
    progress = not (args.quiet or args.json)
    with Store.open(args.session, create=False) as store:
        if args.resume:
            outcome = runs.resume(store, args.resume, processes=args.processes, progress=progress)
        else:
            outcome = runs.finetune(store, preset=args.preset, overrides=args.set, init_from=args.init_from or "production",
                                    processes=args.processes, progress=progress)
    return _print_run_result(args, outcome)


def _print_run_result(args: argparse.Namespace, outcome: typing.Any) -> int:
    """A finished training (or ensemble) run in one line, or one JSON object with --json."""
    result = outcome.result
    line = {"run_id": outcome.run_id, "status": result["status"], "seconds": result.get("seconds"),
            "val_accuracy": result.get("accuracy", {}).get("val"),
            "val_accuracy_true": result.get("accuracy_true", {}).get("val"),
            "test_accuracy": result.get("accuracy", {}).get("test"),
            "test_accuracy_unquarantined": result.get("accuracy_unquarantined", {}).get("test"),
            "error": result.get("error")}
    if args.json:
        print(json.dumps(line), file=args.stdout)
    else:
        parts = [f"run {line['run_id']}: {line['status']}"]
        if line["val_accuracy"] is not None:
            parts.append(f"val accuracy {line['val_accuracy']:.4f} (given labels)")
        if line["val_accuracy_true"] is not None:
            parts.append(f"{line['val_accuracy_true']:.4f} (true labels)")
        if line["test_accuracy"] is not None:
            parts.append(f"test accuracy {line['test_accuracy']:.4f} on every clip"
                         + (f", {line['test_accuracy_unquarantined']:.4f} without the quarantined"
                            if line["test_accuracy_unquarantined"] not in (None, line["test_accuracy"]) else ""))
        parts.append(f"{line['seconds'] or 0:.0f} s")
        print(", ".join(parts) + (f"; error: {line['error']}" if line["error"] else ""))
    return 0 if result["status"] == "succeeded" else 1


def _train_seeds(args: argparse.Namespace) -> int:
    """`train --seeds`: the preset once per seed, as a one-config study (pipelines/study.py), so
    the numbers come as mean ± std with a 95% interval over the seeds."""
    from core.store import Store
    from pipelines.study import default_parallel, run_grid
    if args.resume or args.processes != 1:
        print(f"earmark: error: {'--resume' if args.resume else '--processes'} does not apply to --seeds: each seed "
              "trains as one process of a study (continue a stopped one with 'earmark grid --resume STUDY')",
              file=sys.stderr)
        return 2
    with Store.open(args.session, create=False) as store:
        outcome = run_grid(store, preset=args.preset, seeds=args.seeds, overrides=args.set,
                           init_from=args.init_from or "production", parallel=default_parallel(),
                           progress=not (args.quiet or args.json))
    return _study_output(args, outcome)


def _register_train(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    p = sub.add_parser("train", help="fine-tune on the session's current labels (a child process; Ctrl-C cancels cleanly)",
                       parents=_parents(shared, "session", "set", "json", "quiet"))
    start = p.add_mutually_exclusive_group()
    start.add_argument("--preset", default="demo-fast", help=f"preset name ({', '.join(list_presets())}) or a YAML path")
    start.add_argument("--resume", metavar="RUN_ID",
                       help="continue a cancelled or crashed run from its last finished epoch, in its own folder, with "
                            "the config and manifest it started with (--set and --init-from do not apply)")
    p.add_argument("--init-from", help="production (default), none, a run id, or a checkpoint folder")
    p.add_argument("--processes", type=int, default=1, help="training processes (Accelerate DDP); default 1")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 42,123,456: train the preset once per seed (a "
                                   "one-config study) and report each number as mean ± std [95%% interval] over seeds")
    p.set_defaults(func=_cmd_train)


def _cmd_ensemble(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines import ensemble

    members, weights = ensemble.parse_members(args.members)
    with Store.open(args.session, create=False) as store:
        prepared = ensemble.prepare_ensemble(store, members=members, weights=weights)
        if not (args.quiet or args.json):
            print(prepared.start_line())
        outcome = ensemble.run_prepared(store, prepared, progress=not (args.quiet or args.json))
    return _print_run_result(args, outcome)


def _register_ensemble(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    p = sub.add_parser("ensemble", help="combine finished runs (e.g. the CNN and the AST) into one run that averages "
                                        "their probabilities, each calibrated on val (D5); audit, compare and promote "
                                        "it like any run", parents=_parents(shared, "session", "json", "quiet"))
    p.add_argument("--members", required=True, metavar="RUN[:WEIGHT],RUN[:WEIGHT]",
                   help="two or more finished training runs with the same classes, optionally weighted (default equal)")
    p.set_defaults(func=_cmd_ensemble)


def _cmd_finetune(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines.finetune_audit_gates import finetune_audit_gates
    with Store.open(args.session, create=False) as store:
        outcome = finetune_audit_gates(store, preset=args.preset, overrides=args.set, init_from=args.init_from,
                                       processes=args.processes, promote_if_passed=args.promote_if_passed,
                                       actor=args.actor, progress=not (args.quiet or args.json))
    if args.json:
        print(json.dumps({"run_id": outcome.run_id, "status": outcome.status, "training": outcome.training.get("status"),
                          "test_accuracy": outcome.training.get("accuracy", {}).get("test"),
                          "audit_run_id": outcome.audit_run_id, "gates_passed": outcome.gates_passed,
                          "failed": outcome.gates["gates"]["failed"] if outcome.gates else None,
                          "promoted": outcome.promoted, "inbox": outcome.inbox_lines, "error": outcome.error},
                         default=str), file=args.stdout)
    else:
        print("\n".join(outcome.lines()))
    if outcome.status != "succeeded":
        return 1
    return 1 if args.promote_if_passed and not outcome.promoted else 0


def _register_finetune(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    p = sub.add_parser("finetune", help="fine-tune, audit the new model, evaluate its gates (the workbench's one click)",
                       description="Fine-tune, audit the new model, evaluate its gates; Ctrl-C cancels cleanly. Exit "
                                   "0 when it ran to the gates (failing gates are reported, production stays), 1 when "
                                   "a step failed or was cancelled, or --promote-if-passed did not promote.",
                       parents=_parents(shared, "session", "set", "json", "quiet"))
    p.add_argument("--preset", required=True, help=f"preset name ({', '.join(list_presets())}) or a YAML path")
    p.add_argument("--init-from", default="production",
                   help="production (default), none, a run id, or a checkpoint folder")
    p.add_argument("--promote-if-passed", action="store_true",
                   help="put the new run in production when every gate passes (never otherwise)")
    p.add_argument("--actor", default=getpass.getuser(), help="who signs a promotion (default: your login name)")
    p.add_argument("--processes", type=int, default=1, help="training processes (Accelerate DDP); default 1")
    p.set_defaults(func=_cmd_finetune)


def _cmd_augment_copies(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines.augment_copies import make_augmented_copies
    with Store.open(args.session, create=False) as store:
        summary = make_augmented_copies(store, preset=args.preset, overrides=args.set, copies_per_clip=args.copies,
                                        classes=args.classes, clip_ids=args.clip, seed=args.seed, workers=args.workers,
                                        progress=not (args.quiet or args.json))
    print(json.dumps(summary.to_dict()) if args.json else "\n".join(summary.lines()), file=args.stdout)
    return 0


def _register_augment_copies(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    p = sub.add_parser("augment-copies", help="write augmented copies of training clips into the session (A4), "
                                              "as clips that follow their parent's label",
                       parents=_parents(shared, "session", "set", "json", "quiet"))
    p.add_argument("--preset", default="sirens-focused", help="preset whose waveform augmentations make the copies")
    p.add_argument("--copies", type=int, help="copies per clip (default: the preset's augment_copies, at least 1)")
    p.add_argument("--classes", nargs="+", help="copy clips of these classes (default: the preset's augment_classes)")
    p.add_argument("--clip", type=int, nargs="+", help="copy just these clip ids (training clips only)")
    # its own --seed: unset means the preset's, which the shared option's 0 would hide
    p.add_argument("--seed", type=int, help="seed of the draws (default: the preset's train.seed)")
    p.add_argument("--workers", type=int, default=2, help="rendering threads (default 2)")
    p.set_defaults(func=_cmd_augment_copies)


def _cmd_serve(args: argparse.Namespace) -> int:
    refusal = _exposure_refusal(args.host, auth=args.auth, no_auth=args.no_auth)
    if refusal:
        print(f"earmark: error: {refusal}", file=sys.stderr)
        return 2
    session = Path(args.session)
    if session.resolve() == DEFAULT_SESSION.resolve():
        from pipelines.demo import prepare_demo_workbench
        for line in prepare_demo_workbench(session_dir=session):
            print(line, flush=True)
    elif not session_exists(session):
        raise StoreError(f"no session at {session}: create it with 'earmark import --session {session} DATA' first")
    from workbench.server import serve  # Gradio and torch take seconds to import: after the checks
    return serve(session_dir=session, host=args.host, port=args.port, auth=args.auth)


def _register_serve(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    p = sub.add_parser("serve", help="launch the workbench in the browser (default: the demo session)",
                       parents=_parents(shared, "session"))
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; any other "
                                                       "address needs --auth or --no-auth)")
    p.add_argument("--port", type=int, default=7860)
    login = p.add_mutually_exclusive_group()
    login.add_argument("--auth", help="user:password, or a file holding such lines, to require a login; decisions are "
                                      "then signed with the login name")
    login.add_argument("--no-auth", action="store_true", help="serve a non-loopback --host without a login, on purpose")
    p.set_defaults(func=_cmd_serve)


def _exposure_refusal(host: str, *, auth: str | None, no_auth: bool) -> str | None:
    """Why serving on host is refused, or None: never beyond this machine without a login,
    unless asked to. Any machine that reaches a non-loopback address could listen to the audio
    and sign decisions; --auth requires a login, --no-auth says serving without one is intended.
    """
    if auth or no_auth or _is_loopback(host):
        return None
    return (f"--host {host} serves this session (its audio, labels and decisions) to every machine that can "
            "reach this one; add --auth user:password (or a file of such lines) to require a login, or "
            "--no-auth to serve it without one")


def _is_loopback(host: str) -> bool:
    """Only this machine can reach host; a host name other than localhost may resolve to any interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _cmd_audit(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines.audit import audit
    with Store.open(args.session, create=False) as store:
        options = {name: getattr(args, name) for name in (*AUDIT_OPTIONS, *LABEL_ISSUE_OPTIONS, "calibrate")
                   if getattr(args, name) is not None}
        outcome = audit(store, run_id=args.run, splits=_split_list(args.splits) if args.splits else None,
                        label_issues=args.label_issues,
                        cv_preset=args.cv_preset, cv_overrides=args.cv_set,
                        seed=args.seed, progress=not (args.quiet or args.json), **options)
        key_classes = _key_classes(store, outcome.model_run_id)
    if args.json:
        print(json.dumps({"run_id": outcome.run_id, "model_run_id": outcome.model_run_id, "status": outcome.status,
                          "error": outcome.error, "counts": outcome.counts, "accuracy": outcome.accuracy,
                          "proposals": len(outcome.proposals), "key_classes": outcome.key_classes,
                          "label_issues": outcome.label_issues, "judging": outcome.judging}, default=str),
              file=args.stdout)
    else:
        print("\n".join(outcome.lines(key_classes=key_classes)))
    return 0 if outcome.status == "succeeded" else 1


def _register_audit(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    p = sub.add_parser("audit", help="predict a model's clips, store metrics and plots, queue suspect labels for review",
                       parents=_parents(shared, "session", "json", "quiet"))
    which = p.add_mutually_exclusive_group()
    which.add_argument("--run", help="training run to audit (default: the production model)")
    which.add_argument("--production", dest="run", action="store_const", const=None,
                       help="audit the production model (the default)")
    p.add_argument("--splits", help="comma-separated splits and clip sets to audit (default test,val,train and every "
                                    "clip set, e.g. test_expanded)")
    _add_config_options(p, AuditConfig, AUDIT_OPTIONS)
    p.add_argument("--no-calibrate", dest="calibrate", action="store_false", default=None,
                   help="judge on the model's own probabilities (by default: "
                        + _sentence_part(AuditConfig.field_help()["calibrate"]) + ")")
    p.add_argument("--label-issues", action="store_true",
                   help="also rank label issues with K-fold cross-validated models (trains K models: minutes)")
    _add_config_options(p, AuditConfig, LABEL_ISSUE_OPTIONS)
    p.add_argument("--cv-preset", default="demo-fast", help="preset the fold models train with, from scratch (default demo-fast)")
    p.add_argument("--cv-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the fold preset, after the built-in train.epochs=8 (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    p.set_defaults(func=_cmd_audit)


# AuditConfig fields the audit command offers as flags (--max-label-prob ...). Unset flags stay None so
# AuditConfig supplies the default, and validates every value once, where the options enter.
AUDIT_OPTIONS = ("thresholds", "max_label_prob", "min_top_prob", "min_class_accuracy", "max_queue_share",
                 "max_label_issues")
LABEL_ISSUE_OPTIONS = ("method", "folds")


def _add_config_options(p: argparse.ArgumentParser, config: type, names: tuple[str, ...]) -> None:
    """One flag per field of a Config dataclass in names (--max-label-prob ...), its help, default,
    type and choices read from the config. Unset flags stay None so the config supplies the
    default, and validates every value once, where the options enter."""
    defaults, helps = config().to_dict(), config.field_help()
    hints = typing.get_type_hints(config)
    for name in names:
        hint = hints[name]
        choices = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None
        plain = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]  # int | None -> int
        kind = str if choices else plain[0]
        default = "none" if defaults[name] is None else defaults[name]
        help_text = f"{helps[name]} (default {default})".replace("%", "%%")  # argparse formats help with %
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, choices=choices, help=help_text)


def _sentence_part(text: str) -> str:
    """A help sentence to continue another: 'Fit temperature ... probabilities.' -> 'fit ... probabilities'."""
    return text[0].lower() + text[1:].rstrip(".")


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _key_classes(store, run_id: str) -> list[str]:
    from core.config import ExperimentConfig
    return ExperimentConfig.from_dict(store.run(run_id)["config"]).gates.key_classes


HYGIENE_OPTIONS = tuple(HygieneConfig.field_help())


def _cmd_hygiene(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines.hygiene import hygiene
    options = {name: getattr(args, name) for name in HYGIENE_OPTIONS if getattr(args, name) is not None}
    with Store.open(args.session, create=False) as store:
        outcome = hygiene(store, progress=not (args.quiet or args.json), **options)
    if args.json:
        print(json.dumps({"run_id": outcome.run_id, "status": outcome.status, "error": outcome.error,
                          "measured": outcome.measured, "failed": outcome.failed, "queued": outcome.queued,
                          "untrusted": outcome.untrusted, "skipped_reviewed": outcome.skipped_reviewed,
                          "unreadable": outcome.unreadable, "settings": outcome.settings.to_dict()}), file=args.stdout)
    else:
        print("\n".join(outcome.lines()))
    return 0 if outcome.status == "succeeded" else 1


def _register_hygiene(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    p = sub.add_parser("hygiene", help="VAD hygiene (B6): a voice-activity detector checks every speech / non-speech "
                                       "clip; the clips it contradicts go to the review queue (reason vad_hygiene)",
                       parents=_parents(shared, "session", "json", "quiet"))
    _add_config_options(p, HygieneConfig, HYGIENE_OPTIONS)
    p.set_defaults(func=_cmd_hygiene)


DUPLICATES_OPTIONS = tuple(name for name in DuplicatesConfig.field_help() if name != "seed")  # --seed is shared


def _cmd_duplicates(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines.duplicates import find_duplicates
    options = {name: getattr(args, name) for name in DUPLICATES_OPTIONS if getattr(args, name) is not None}
    with Store.open(args.session, create=False) as store:
        outcome = find_duplicates(store, run_id=args.run, progress=not (args.quiet or args.json), seed=args.seed,
                                  **options)
    if args.json:
        print(json.dumps({"run_id": outcome.run_id, "status": outcome.status, "error": outcome.error,
                          "embedding": outcome.embedding, "model_run_id": outcome.model_run_id,
                          "embedded": outcome.embedded, "pairs": outcome.pairs, "cross_split": outcome.cross_split,
                          "within_split": outcome.within_split, "queued": outcome.queued,
                          "skipped_verdict": outcome.skipped_verdict, "skipped_open": outcome.skipped_open,
                          "threshold": outcome.threshold, "leakage": outcome.leakage,
                          "test_share_with_train_duplicate": outcome.test_share(), "unreadable": outcome.unreadable,
                          "settings": outcome.settings.to_dict()}), file=args.stdout)
    else:
        print("\n".join(outcome.lines()))
    return 0 if outcome.status == "succeeded" else 1


def _cmd_inbox_add(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines.inbox import add_to_inbox
    if not Path(args.folder).expanduser().is_dir():  # before the session is opened: nothing is written
        raise StoreError(f"nothing to add at {args.folder}: no such folder (the inbox takes a folder of audio files)")
    with Store.open(args.session, create=False) as store:
        summary = add_to_inbox(store, args.folder, name=args.name, group_pattern=args.group_pattern, assign=args.assign,
                               seed=args.seed, progress=not (args.quiet or args.json))
    if args.json:
        print(json.dumps(summary.__dict__, default=str), file=args.stdout)
    else:
        print("\n".join(["inbox: " + summary.lines()[0], *summary.lines()[1:]]))
    return 0


INBOX_OPTIONS = tuple(InboxConfig.field_help())


def _cmd_inbox_score(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines.inbox import score_inbox
    options = {name: getattr(args, name) for name in INBOX_OPTIONS if getattr(args, name) is not None}
    with Store.open(args.session, create=False) as store:
        outcome = score_inbox(store, run_id=args.run, progress=not (args.quiet or args.json), **options)
    if args.json:
        print(json.dumps({"run_id": outcome.run_id, "model_run_id": outcome.model_run_id, "status": outcome.status,
                          "error": outcome.error, "scored": outcome.scored, "k": outcome.k, "k_reason": outcome.k_reason,
                          "temperature": outcome.temperature, "settings": outcome.settings,
                          "queue": outcome.queue.get("clip_id", []).tolist() if len(outcome.queue) else []}),
              file=args.stdout)
    else:
        print("\n".join(outcome.lines()))
    return 0 if outcome.status == "succeeded" else 1


def _register_duplicates(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    p = sub.add_parser("duplicates", help="near-duplicate leakage (issue 17): find clips that are copies of each other "
                                          "across train / val / test; held-out ones go to the review queue (reason "
                                          "near_duplicate) and the share of test clips with a train duplicate is reported",
                       parents=_parents(shared, "session", "seed", "json", "quiet"))
    p.add_argument("--run", help="the trained run whose model embeds the clips (default: production; without a model, "
                                 "log-mel fingerprints)")
    _add_config_options(p, DuplicatesConfig, DUPLICATES_OPTIONS)
    p.set_defaults(func=_cmd_duplicates)


def _cmd_inbox_queue(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines.inbox import queue_json, scoring_summary, uncertain_queue
    with Store.open_snapshot(args.session) as store:  # only reads: works while a server holds the session
        queue, line = uncertain_queue(store), scoring_summary(store)
    if not args.all:
        queue = queue[queue.status == "open"]
    if args.json:
        print(queue_json(queue), file=args.stdout)
        return 0
    print(line)
    for row in queue.itertuples():
        print(f"  clip {row.clip_id} {row.file}: {row.reason}; predicted {row.predicted} ({row.confidence:.2f})"
              + ("" if row.status == "open" else f"; now {row.label} in {row.split}"))
    return 0


def _register_inbox(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    p = sub.add_parser("inbox", help="active learning (A10): add unlabelled audio, rank it by the model's uncertainty, "
                                     "label the top of the queue in the Review tab")
    actions = p.add_subparsers(dest="inbox_command", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="register a folder of unlabelled audio as clips without a label",
                             parents=_parents(shared, "session", "seed", "json", "quiet"))
    add.add_argument("folder", help="folder of audio files (any depth); every file is probed like an import")
    add.add_argument("--name", help="dataset name (default: inbox-<folder name>)")
    add.add_argument("--group-pattern", help="regex on the file name whose first group is the source group "
                                             "(recording); default: each file is its own group")
    add.add_argument("--assign", default="train", choices=["train", "grouped"],
                     help="where a labelled clip of a new source group goes: train (default), or grouped (a seeded "
                          "60/20/20 draw per group); a group already in a split always joins it")
    add.set_defaults(func=_cmd_inbox_add)
    score = actions.add_parser("score", help="rank the unlabelled clips by a model's uncertainty (a child job); the top K "
                                             "become the Review tab's 'uncertain' queue",
                               parents=_parents(shared, "session", "json", "quiet"))
    score.add_argument("--run", help="training run that scores (default: the production model)")
    _add_config_options(score, InboxConfig, INBOX_OPTIONS)
    score.set_defaults(func=_cmd_inbox_score)
    queue = actions.add_parser("queue", help="list the uncertain queue (reads a snapshot: works while a server runs)",
                               parents=_parents(shared, "session", "json"))
    queue.add_argument("--all", action="store_true", help="also the queued clips labelled since the scoring")
    queue.set_defaults(func=_cmd_inbox_queue)


def _cmd_promote(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines.promotion import promote
    with Store.open(args.session, create=False) as store:
        outcome = promote(store, run_id=args.run, actor=args.actor, override=args.override, reason=args.reason)
    if args.json:
        print(json.dumps({"run_id": outcome.run_id, "promoted": outcome.promoted, "action": outcome.action,
                          "production": outcome.production, "passed": outcome.report["passed"],
                          "failed": outcome.report["gates"]["failed"]}), file=args.stdout)
    else:
        print("\n".join(outcome.lines()))
    return 0 if outcome.promoted else 1


def _register_promote(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    p = sub.add_parser("promote", help="put a run in production if its gates pass (or by override, with a reason)",
                       parents=_parents(shared, "session", "json"))
    p.add_argument("--run", required=True, help="the training run to promote (audit it first)")
    p.add_argument("--actor", default=getpass.getuser(), help="who decides (default: your login name)")
    p.add_argument("--override", action="store_true", help="promote even though gates fail (needs --reason)")
    p.add_argument("--reason", help="why; required with --override, recorded with the promotion")
    p.set_defaults(func=_cmd_promote)


def _cmd_rollback(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines.promotion import rollback
    with Store.open(args.session, create=False) as store:
        previous, current = rollback(store, actor=args.actor, reason=args.reason)
    print(f"production rolled back from run {previous} to run {current}")
    return 0


def _register_rollback(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    p = sub.add_parser("rollback", help="point production back to the previously promoted run",
                       parents=_parents(shared, "session"))
    p.add_argument("--actor", default=getpass.getuser(), help="who decides (default: your login name)")
    p.add_argument("--reason", required=True, help="why, recorded with the rollback (required, as for an override)")
    p.set_defaults(func=_cmd_rollback)


def _cmd_compare(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines.promotion import compare_runs
    from pipelines.study_compare import compare_seed_runs, is_seed_spec
    with Store.open(args.session, create=False) as store:
        if is_seed_spec(store, args.baseline) or is_seed_spec(store, args.candidate):
            return _seed_comparison_output(args, *compare_seed_runs(store, baseline=args.baseline,
                                                                    candidate=args.candidate, split=args.split))
        comparison, paths = compare_runs(store, baseline=args.baseline, candidate=args.candidate, split=args.split)
    if args.json:
        print(json.dumps({**comparison, "files": {k: str(v) for k, v in paths.items()}}), file=args.stdout)
        return 0
    overall = comparison["overall"]
    print(f"{args.split}: {comparison['candidate_run_id']} vs {comparison['baseline_run_id']} on {comparison['n_clips']} clips")
    print("  " + ", ".join(f"{m} {v['baseline']:.4f} -> {v['candidate']:.4f}"
                           for m, v in overall.items() if v["delta"] is not None))
    for label, per in comparison["per_class"].items():
        change = per["accuracy_relative_change"]
        print(f"  {label:<22} accuracy {per['baseline_accuracy']:.4f} -> {per['candidate_accuracy']:.4f}"
              + (f" ({change:+.1%})" if change is not None else ""))
    for column, groups in comparison["breakdowns"].items():
        print(f"  accuracy by {column}: " + ", ".join(f"{group} {g['baseline_accuracy']:.3f} -> {g['candidate_accuracy']:.3f} "
                                                   f"(n={g['n']})" for group, g in groups.items()))
    print(f"  fixed {len(comparison['fixed'])} clips, broken {len(comparison['broken'])}"
          + (": " + ", ".join(str(c["clip_id"]) for c in comparison["broken"][:10]) if comparison["broken"] else ""))
    print(f"  report: {paths['json']}  picture: {paths['png']}")
    return 0


def _seed_comparison_output(args: argparse.Namespace, comparison: dict, files: dict) -> int:
    """A comparison over seeds (C3): lines with the verdict, or one JSON object; exit 0 either way
    (the verdict is information, as a failing gate report is)."""
    from pipelines.study_compare import seed_comparison_lines
    if args.json:
        print(json.dumps({**comparison, "files": {k: str(v) for k, v in files.items()}}), file=args.stdout)
    else:
        print("\n".join(seed_comparison_lines(comparison)) + f"\n  report: {files['markdown']}")
    return 0


def _register_compare(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    p = sub.add_parser("compare", help="compare two runs clip by clip: per-class deltas, confusion change, flipped "
                                       "clips; or two grid configs over their seeds with a go/no-go verdict (C3)",
                       parents=_parents(shared, "session", "json"))
    p.add_argument("baseline", help="baseline run id (a training run or an audit), or a grid study (STUDY: its best "
                                    "config, or STUDY:CONFIG) to compare over seeds")
    p.add_argument("candidate", help="candidate run id (a training run or an audit), or a grid study (STUDY or "
                                     "STUDY:CONFIG)")
    p.add_argument("--split", default="test", help="split to compare on (default test)")
    p.set_defaults(func=_cmd_compare)


# ComparisonConfig fields with a flag of their own; --detectors is a comma-separated list.
COMPARISON_OPTIONS = tuple(name for name in ComparisonConfig.field_help() if name != "detectors")


def _cmd_compare_detectors(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines.detector_comparison import compare_detectors
    options = {name: getattr(args, name) for name in COMPARISON_OPTIONS if getattr(args, name) is not None}
    if args.detectors is not None:
        options["detectors"] = [] if args.detectors.strip() == "none" else _split_list(args.detectors)
    with Store.open(args.session, create=False) as store:
        outcome = compare_detectors(store, runs=_split_list(args.runs), progress=not (args.quiet or args.json), **options)
    if args.json:
        print(json.dumps({"run_id": outcome.run_id, "status": outcome.status, "error": outcome.error, "runs": outcome.runs,
                          "not_compared": outcome.not_compared, "summary": outcome.summary,
                          "files": {key: str(path) for key, path in outcome.report_files.items()}}), file=args.stdout)
    else:
        print("\n".join(outcome.lines()))
    return 0 if outcome.status == "succeeded" else 1


def _register_compare_detectors(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    p = sub.add_parser("compare-detectors", help="speech detectors side by side (B9): trained runs beside WebRTC and "
                                                 "Silero VAD on the val and test clips, thresholds chosen on val (B5); "
                                                 "writes the report (Markdown, JSON, PNGs) in the new run's folder",
                       parents=_parents(shared, "session", "json", "quiet"))
    p.add_argument("--runs", required=True, help="comma-separated succeeded training runs whose models have the speech class")
    p.add_argument("--detectors", help=ComparisonConfig.field_help()["detectors"] + " Comma-separated, 'none' for empty "
                                       "(default " + ",".join(ComparisonConfig().detectors) + ")")
    _add_config_options(p, ComparisonConfig, COMPARISON_OPTIONS)
    p.set_defaults(func=_cmd_compare_detectors)


STUDY_PLAN_FLAGS = ("grid", "seeds", "metric", "init_from", "folds", "leave_one_group_out", "group_class")  # fixed when a study starts


def _cmd_grid(args: argparse.Namespace) -> int:
    from core.store import Store
    from core.study import DEFAULT_SEEDS, read_grid
    from pipelines.study import resume_study, run_grid
    refusal = _resume_refusal(args)
    if refusal:
        print(f"earmark: error: {refusal}", file=sys.stderr)
        return 2
    grid = read_grid(args.grid) if args.grid else None  # a bad file is refused before the session is opened
    with Store.open(args.session, create=False) as store:
        options = _study_options(args)
        if args.resume:
            outcome = resume_study(store, args.resume, **options)
        else:
            outcome = run_grid(store, preset=args.preset, grid=grid, seeds=args.seeds or DEFAULT_SEEDS, overrides=args.set,
                               init_from=args.init_from or "none", metric=args.metric or "f1_macro", **options)
    return _study_output(args, outcome)


def _resume_refusal(args: argparse.Namespace) -> str | None:
    """--resume continues a study as it was planned: the options that plan one do not apply."""
    if not args.resume:
        return None
    given = [name for name in STUDY_PLAN_FLAGS if getattr(args, name, None)] + (["set"] if args.set else [])
    if not given:
        return None
    return (f"--{given[0].replace('_', '-')} does not apply to --resume: a resumed study trains the configs, seeds and "
            "splits it was started with")


def _study_options(args: argparse.Namespace) -> dict[str, typing.Any]:
    from pipelines.study import default_parallel
    return {"parallel": args.parallel if args.parallel is not None else default_parallel(),
            "keep_models": not args.drop_models, "progress": not (args.quiet or args.json)}


def _study_output(args: argparse.Namespace, outcome) -> int:
    """Print a study's outcome (lines, or one JSON object); exit 0 only when every trial succeeded."""
    report = outcome.report
    if args.json:
        table = "configs" if outcome.study.study == "grid" else "folds"
        print(json.dumps({"study_id": outcome.study_id, "status": outcome.status, "counts": report["counts"],
                          "best": report.get("best"), table: report[table],
                          **({"across_folds": report["across_folds"], "worst_group": report["worst_group"]}
                             if table == "folds" else {}),
                          "timing": report["timing"], "files": {k: str(v) for k, v in outcome.files.items()}}),
              file=args.stdout)
    else:
        print("\n".join(outcome.lines()))
    return 0 if outcome.status == "succeeded" and not report["counts"]["failed"] else 1


def _add_study_options(p: argparse.ArgumentParser) -> None:
    """The options every study takes (grid and cross-validation)."""
    from core.study import DEFAULT_SEEDS
    start = p.add_mutually_exclusive_group()
    start.add_argument("--preset", default="demo-fast", help=f"preset name ({', '.join(list_presets())}) or a YAML path")
    start.add_argument("--resume", metavar="STUDY_ID",
                       help="continue a stopped or crashed study: finished trials are skipped, a stopped trial "
                            "continues from its last finished epoch, the others start again")
    p.add_argument("--seeds", help="comma-separated seeds; every config (or fold) trains once per seed "
                                   f"(default {','.join(map(str, DEFAULT_SEEDS))})")
    p.add_argument("--parallel", type=int, help="trials trained side by side (default: one per 4 cores, at least 1)")
    p.add_argument("--drop-models", action="store_true",
                   help="delete the trials' checkpoints when the study ends (runs and metrics stay; a grid keeps its "
                        "best run's)")


def _register_grid(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    from core.study import STUDY_METRICS
    p = sub.add_parser("grid", help="grid search (B3): train every config of a grid file at several seeds, rank the "
                                    "configs by a val metric's mean over seeds; each trial is an ordinary run",
                       description="Grid search: every config at every seed is an ordinary training run of this "
                                   "session; the study (a run of kind study) ranks the configs on val and writes "
                                   "results.json/.csv/.md and a plot. Ctrl-C stops it; --resume continues it. Exit 0 "
                                   "when every trial succeeded, 1 otherwise.",
                       parents=_parents(shared, "session", "set", "json", "quiet"))
    _add_study_options(p)
    p.add_argument("--grid", metavar="FILE", help="YAML with dotted preset keys: 'grid: {train.lr: [1e-3, 2e-3]}' (full "
                                                  "factorial) or 'configs: [{name: a, set: {...}}, ...]'; default: the "
                                                  "preset alone (seeds only)")
    p.add_argument("--metric", choices=STUDY_METRICS, help="val metric the configs are ranked by (default f1_macro)")
    p.add_argument("--init-from", help="what every trial starts from: none (default: the preset's own start), "
                                       "production, a run id or a checkpoint folder")
    p.set_defaults(func=_cmd_grid)


def _cmd_heads_effect(args: argparse.Namespace) -> int:
    from core.config import ConfigError
    from core.store import Store
    from core.study import DEFAULT_SEEDS
    from pipelines.heads_effect import heads_effect_report, run_heads_effect
    given = [flag for flag, value in (("--seeds", args.seeds), ("--set", args.set), ("--preset", args.preset)) if value]
    if args.study and given:
        print(f"earmark: error: {given[0]} does not apply to --study: the study was trained with its own", file=sys.stderr)
        return 2
    pairs = []
    for text in args.pair or []:
        names = [name.strip() for name in text.split(",")]
        if len(names) != 2 or not all(names):
            raise ConfigError(f"--pair: {text!r} must name two classes as A,B")
        pairs.append(names)
    with Store.open(args.session, create=False) as store:
        if args.study:
            effect = heads_effect_report(store, args.study, pairs=pairs)
        else:
            effect = run_heads_effect(store, preset=args.preset or "demo-fast", seeds=args.seeds or DEFAULT_SEEDS,
                                      overrides=args.set, **_study_options(args))
            if pairs:
                effect = heads_effect_report(store, effect.study_id, pairs=pairs)
    if args.json:
        print(json.dumps({**effect.report, "files": {k: str(v) for k, v in effect.files.items()}}), file=args.stdout)
    else:
        print("\n".join([*effect.lines(), f"  report: {effect.files['markdown']}"]))
    return 0


def _register_heads_effect(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    p = sub.add_parser("heads-effect", help="A10: train a preset without and with its auxiliary heads (contrastive, "
                                            "envelope rate) at the same seeds; report the confusion between the paired "
                                            "classes on val and test, per seed and mean ± 95% interval",
                       parents=_parents(shared, "session", "set", "json", "quiet"))
    p.add_argument("--preset", help=f"preset name ({', '.join(list_presets())}) or a YAML path (default demo-fast); its "
                                    "heads settings (weights, pairs, band) are the with-heads config")
    p.add_argument("--seeds", help="comma-separated seeds, the same for both configs (default 42,123,456)")
    p.add_argument("--parallel", type=int, help="trials trained side by side (default: one per 4 cores, at least 1)")
    p.add_argument("--drop-models", action="store_true", help="delete the trials' checkpoints when the study ends")
    p.add_argument("--pair", action="append", metavar="A,B",
                   help="a class pair to report (repeatable); default: the preset's heads.contrastive.pairs, or every "
                        "pair of classes when it names none")
    p.add_argument("--study", metavar="STUDY_ID", help="report on a heads study that already trained (no training)")
    p.set_defaults(func=_cmd_heads_effect)


def _cmd_crossval(args: argparse.Namespace) -> int:
    from core.store import Store
    from core.study import DEFAULT_SEEDS
    from pipelines.study import resume_study
    from pipelines.study_crossval import run_crossval
    refusal = _resume_refusal(args)
    if refusal:
        print(f"earmark: error: {refusal}", file=sys.stderr)
        return 2
    with Store.open(args.session, create=False) as store:
        options = _study_options(args)
        if args.resume:
            outcome = resume_study(store, args.resume, **options)
        else:
            folds = None if args.leave_one_group_out else args.folds or 5
            outcome = run_crossval(store, preset=args.preset, folds=folds, leave_one_group_out=args.leave_one_group_out,
                                   group_class=args.group_class, seeds=args.seeds or DEFAULT_SEEDS, overrides=args.set, split_seed=args.seed, **options)
    return _study_output(args, outcome)


def _register_crossval(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    p = sub.add_parser("crossval", help="grouped cross-validation (B4): k folds by source group, or leave one group "
                                        "out; per-fold and mean ± std accuracy, balanced accuracy, F1-macro, and the "
                                        "worst group; each fold model is an ordinary run",
                       description="Cross-validation by source group: every (fold, seed) is a training run of this "
                                   "session from the preset's own start; test = the fold's held-out groups, val = "
                                   "other groups. Ctrl-C stops it; --resume continues it. Exit 0 when every run "
                                   "succeeded, 1 otherwise.",
                       parents=_parents(shared, "session", "set", "json", "quiet"))
    _add_study_options(p)
    design = p.add_mutually_exclusive_group()
    design.add_argument("--folds", type=int, help="k folds of whole source groups (default 5)")
    design.add_argument("--leave-one-group-out", action="store_true",
                        help="one fold per source group (the speaker, for speech): LOSO")
    p.add_argument("--group-class", metavar="CLASS",
                   help="with --leave-one-group-out: one fold per group of this class (e.g. SPEECH: its groups are the "
                        "speakers); the other classes' groups are dealt over the folds as extra test clips")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold assignment (default 0); --seeds are the "
                                                       "training seeds")
    p.set_defaults(func=_cmd_crossval)


def _cmd_expand_test(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines.expanded_test import build_expanded_test
    with Store.open(args.session, create=False) as store:
        outcome = build_expanded_test(store, name=args.name, groups=args.groups, per_group=args.per_group,
                                      seed=args.seed, replace=args.replace, actor=args.actor,
                                      score_with=None if args.no_score else args.run or "production",
                                      progress=not (args.quiet or args.json))
    if args.json:
        print(json.dumps({"name": outcome.name, "set_id": outcome.set_id, "replaces": outcome.replaces,
                          "clips": len(outcome.clips), "groups": int(outcome.clips["group"].nunique()),
                          "per_class": outcome.per_class, "eligible": outcome.eligible,
                          "model_run_id": outcome.model_run_id, "audit_run_id": outcome.audit_run_id,
                          "intervals": outcome.intervals, "note": outcome.note}), file=args.stdout)
    else:
        print("\n".join(outcome.lines()))
    return 0


def _register_expand_test(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    from pipelines.expanded_test import DEFAULT_NAME
    p = sub.add_parser("expand-test", help="build an expanded test set (B4): N source groups x M clips per class, none "
                                           "in train or val, as a named clip set that audits score and gates can read "
                                           "(gates.split); reports the 95%% interval of accuracy on test and on the set",
                       parents=_parents(shared, "session", "seed", "json", "quiet"))
    p.add_argument("--name", default=DEFAULT_NAME, help=f"name of the clip set (default {DEFAULT_NAME})")
    p.add_argument("--groups", required=True, help="source groups (speakers, recordings) per class: one number, or "
                                                   "CLASS=N pairs, e.g. SPEECH=10,NONSPEECH=20")
    p.add_argument("--per-group", required=True, help="clips drawn from each group: one number, or CLASS=N pairs, "
                                                      "e.g. SPEECH=5,NONSPEECH=3")
    p.add_argument("--replace", action="store_true", help="record a new version of an existing set (the old one "
                                                         "stays in the history)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--run", help="training run to score test and the new set with (default: the production model)")
    which.add_argument("--no-score", action="store_true", help="only build the set; do not audit a model on it")
    p.add_argument("--actor", default=getpass.getuser(), help="who records the set (default: your login name)")
    p.set_defaults(func=_cmd_expand_test)


def _cmd_spotcheck(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines.audit import spot_check
    with Store.open(args.session, create=False) as store:
        picked = spot_check(store, since_run=args.since, n=args.n, seed=args.seed)
    if args.json:
        print(picked.to_json(orient="records"), file=args.stdout)
    elif picked.empty:
        print("no clips were relabelled since then")
    else:
        for row in picked.itertuples():
            print(f"clip {row.clip_id} ({row.split}): {row.label_before} -> {row.label} by {row.annotator}"
                  + (f" [tag {row.tag}]" if isinstance(row.tag, str) else "") + f"  {row.path}")
    return 0


def _cmd_prompt_search(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines.prompt_search import prompt_search
    with Store.open(args.session, create=False) as store:
        outcome = prompt_search(store, preset=args.preset, overrides=args.set, init_from=args.init_from,
                                progress=not (args.quiet or args.json))
    if args.json:
        print(json.dumps({"run_id": outcome.run_id, "status": outcome.status, "error": outcome.error,
                          **{key: outcome.summary.get(key) for key in ("best", "final", "candidates", "rejected")}}),
              file=args.stdout)
    else:
        print("\n".join(outcome.lines()))
    return 0 if outcome.status == "succeeded" else 1


def _register_prompt_search(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    p = sub.add_parser("prompt-search", help="audio LLM (B8): score prompt candidates on the val clips (plan B's five, "
                                             "template variants, the model's own proposals), keep the best, check it "
                                             "on test; a later fine-tune of the same base asks with it",
                       parents=_parents(shared, "session", "set", "json", "quiet"))
    p.add_argument("--preset", default="speech-llm-lora", help="an audio-LLM preset (default speech-llm-lora) or a YAML "
                                                              "path; point it at the base with --set model.pretrained=DIR")
    p.add_argument("--init-from", help="score with the adapters of a finished audio-LLM run (run id or checkpoint "
                                       "folder); default: the base model alone")
    p.set_defaults(func=_cmd_prompt_search)


def _cmd_agreement(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines.double_annotation import agreement_report
    with Store.open_snapshot(args.session) as store:  # reads only: works while the workbench serves the session
        report = agreement_report(store)
    if args.json:
        frames = {"agreement": report.table, "pairs": report.pairs, "annotators": report.annotators,
                  "throughput": report.throughput}
        print(json.dumps({"consensus_method": report.consensus_method,
                          "confusion": json.loads(report.confusion.to_json(orient="split")) if not report.confusion.empty else None,
                          **{name: json.loads(frame.to_json(orient="records", date_format="iso"))
                             for name, frame in frames.items()}}), file=args.stdout)
    else:
        print("\n".join(report.lines()))
    return 0


def _register_agreement(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    p = sub.add_parser("agreement", help="agreement between blind annotators (kappa, Krippendorff's alpha, per class), "
                                         "their confusion, cleanlab's annotator quality, and everyone's throughput",
                       parents=_parents(shared, "session", "json"))
    p.set_defaults(func=_cmd_agreement)


def _cmd_queue_mode(args: argparse.Namespace) -> int:
    from core.store import Store
    from pipelines.double_annotation import set_annotators_per_clip
    with Store.open(args.session, create=False) as store:
        try:
            print(set_annotators_per_clip(store, queue=args.queue, annotators=args.annotators, actor=args.actor))
        except ValueError as exc:
            print(f"earmark: error: {exc}", file=sys.stderr)
            return 2
    return 0


def _register_queue_mode(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    from pipelines.review_queue import SOURCES
    p = sub.add_parser("queue-mode", help="set how many annotators answer each clip of a review queue, blind "
                                          "(2 or more: double annotation with adjudication of disagreements)",
                       parents=_parents(shared, "session"))
    p.add_argument("--queue", required=True, choices=SOURCES, help="the review queue")
    p.add_argument("--annotators", type=int, required=True, help="annotators per clip: 1 (as usual), 2 or more (blind)")
    p.add_argument("--actor", default=getpass.getuser(), help="who sets it (default: your login name)")
    p.set_defaults(func=_cmd_queue_mode)


def _register_spotcheck(sub: argparse._SubParsersAction, shared: SharedOptions) -> None:
    p = sub.add_parser("spotcheck", help="pick random relabelled clips for a second listen (A8)",
                       parents=_parents(shared, "session", "seed", "json"))
    p.add_argument("--since", help="run whose frozen labels count as 'before' (default: the production run)")
    p.add_argument("-n", type=int, default=5, help="how many clips (default 5)")
    p.set_defaults(func=_cmd_spotcheck)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="earmark", description="Earmark: a labelling and audit workbench for audio classifiers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    shared = _shared_options()
    for register in (_register_demo, _register_build_factorial, _register_import, _register_stats, _register_export,
                     _register_train, _register_ensemble, _register_finetune, _register_augment_copies,
                     _register_audit, _register_hygiene, _register_promote, _register_rollback, _register_compare,
                     _register_compare_detectors, _register_prompt_search, _register_grid, _register_heads_effect,
                     _register_crossval, _register_spotcheck, _register_agreement, _register_queue_mode,
                     _register_duplicates, _register_inbox, _register_expand_test, _register_serve):
        register(sub, shared)
    return parser


def _shared_options() -> SharedOptions:
    """Options several commands take, declared once: a command lists the ones it takes as parents."""
    shared = {name: argparse.ArgumentParser(add_help=False) for name in ("session", "json", "quiet", "seed", "set")}
    shared["session"].add_argument("--session", default=str(DEFAULT_SESSION), help="session folder (default: sessions/demo)")
    shared["json"].add_argument("--json", action="store_true",
                                help="print one JSON object instead of the text summary (stdout carries only the JSON)")
    shared["quiet"].add_argument("--quiet", action="store_true", help="no progress bars")
    shared["seed"].add_argument("--seed", type=int, default=0, help="seed of this command's random draws (default 0)")
    shared["set"].add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                               help="override a preset value, e.g. --set train.epochs=3 (repeatable)")
    return shared


def _parents(shared: SharedOptions, *names: str) -> list[argparse.ArgumentParser]:
    return [shared[name] for name in names]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv or ["serve"])
    if args.command is None:
        parser.print_help()
        return 2
    from core.audio import AudioError
    from core.config import ConfigError
    from core.relabel_rules import RuleFileError
    from pipelines.importing import DatasetImportError
    try:
        with _stdout_for_json_only(args):
            return args.func(args)
    except (StoreError, DatasetImportError, ConfigError, AudioError, RuleFileError) as exc:
        print(f"earmark: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("earmark: interrupted", file=sys.stderr)
        return 130


@contextlib.contextmanager
def _stdout_for_json_only(args: argparse.Namespace) -> Iterator[None]:
    """With --json, stdout carries only the command's JSON, which it prints to args.stdout:
    whatever else is printed on the way (per-epoch lines, warnings) goes to stderr with the
    progress bars, so `earmark train --json | jq` always parses."""
    args.stdout = sys.stdout
    if not getattr(args, "json", False):
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


if __name__ == "__main__":
    sys.exit(main())
