"""Studies (issue 16): grid files and seeds read and refused in one line, summaries over seeds
with exact numbers, and a real grid on the small demo: every (config, seed) an ordinary run,
ranked on val, a crashing config recorded while the study goes on, a stop that keeps finished
trials and a resume that runs only the rest. Tiny models, one epoch; one study per fixture."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

import app
from conftest import TINY_CNN, copy_session
from core.config import ConfigError, ExperimentConfig
from core.store import Store
from core.study import DEFAULT_SEEDS, parse_grid, parse_seeds, rank, read_grid, spread, summarise
from pipelines import study as studies



# --- grid files, seeds, summaries (pure) -------------------------------------------------------------

def test_a_grid_is_the_full_factorial_in_file_order_with_fixed_keys_in_every_config():
    grid = parse_grid({"grid": {"train.lr": ["5e-4", 0.001, 0.002], "train.schedule": ["cosine", "linear"]},
                       "fixed": {"train.epochs": 2}})
    assert len(grid.configs) == 6
    assert grid.configs[0].name == "train.lr=5e-4 train.schedule=cosine"
    assert grid.configs[5].overrides == {"train.epochs": 2, "train.lr": 0.002, "train.schedule": "linear"}
    assert grid.configs[1].assignments() == ['train.epochs=2', 'train.lr="5e-4"', 'train.schedule="linear"']
    bare = parse_grid({"train.class_weights": ["balanced", "effective", "sqrt"]})  # no section: the grid itself
    assert [c.overrides for c in bare.configs] == [{"train.class_weights": w} for w in ("balanced", "effective", "sqrt")]


def test_named_configs_keep_their_names_and_a_saved_grid_reads_back():
    grid = parse_grid({"configs": [{"name": "r8", "set": {"model.lora.rank": 8, "train.lr": 1e-4}},
                                   {"name": "r16", "set": {"model.lora.rank": 16}}]})
    assert [c.name for c in grid.configs] == ["r8", "r16"] and grid.configs[1].overrides == {"model.lora.rank": 16}
    assert type(grid).from_dict(json.loads(json.dumps(grid.to_dict()))) == grid


@pytest.mark.parametrize("data, message", [
    ({"grid": {"train.lr": []}}, "grid key 'train.lr': expected a non-empty list"),
    ({"grid": {"train.lr": 0.001}}, "grid key 'train.lr': expected a non-empty list"),
    ({"grid": {"train.lr": [0.1, 0.1]}}, "a value is listed twice"),
    ({"grid": {"train.lr": [0.1]}, "configs": [{"name": "a"}]}, "either a 'grid' section"),
    ({"grid": {"train.lr": [0.1]}, "seeds": [1]}, "unknown section 'seeds'; allowed: grid, configs, fixed"),
    ({"configs": [{"name": "a", "set": {}}, {"name": "a", "set": {}}]}, "the name 'a' is used twice"),
    ({"configs": [{"name": "a", "train.lr": 0.1}]}, "unknown key 'train.lr'; allowed: name, set"),
    ({"grid": {"train.lr": [0.1]}, "fixed": {"train.lr": 0.2}}, "key 'train.lr' is both fixed and varied"),
])
def test_a_malformed_grid_file_is_refused_in_one_line(tmp_path, data, message):
    path = tmp_path / "grid.yaml"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=message) as refused:
        read_grid(path)
    assert "\n" not in str(refused.value) and str(refused.value).startswith(str(path))


def test_seeds_are_distinct_whole_numbers():
    assert parse_seeds("42, 123,456") == [42, 123, 456] == parse_seeds(DEFAULT_SEEDS)
    for bad, message in (("42,x", "'x' is not a whole number"), ("-1", "'-1' is not a whole number"),
                         ("", "at least one seed"), ("7,7", "repeats a seed"), ([1.5], "1.5 is not a whole number")):
        with pytest.raises(ConfigError, match=message):
            parse_seeds(bad)


def test_spread_is_the_mean_sample_std_and_a_student_t_interval():
    s = spread([0.80, 0.90, 0.85, None, math.nan])  # missing numbers are left out
    half = 4.302652729911275 * 0.05 / math.sqrt(3)  # t(0.975, 2) x std / sqrt(n)
    assert (s["n"], s["mean"], s["std"]) == (3, pytest.approx(0.85), pytest.approx(0.05))
    assert (s["ci95_low"], s["ci95_high"]) == (pytest.approx(0.85 - half), pytest.approx(0.85 + half))
    high = spread([0.90, 1.0, 0.95])
    assert (high["ci95_low"], high["ci95_high"]) == (pytest.approx(0.95 - half), 1.0)  # cut at 1: a fraction
    assert spread([0.7]) == {"n": 1, "mean": 0.7, "std": None, "ci95_low": None, "ci95_high": None}
    assert spread([])["mean"] is None


def test_configs_are_ranked_by_their_mean_over_succeeded_seeds_and_all_failed_last():
    trials = pd.DataFrame({"name": ["a", "a", "b", "b", "c"], "status": ["succeeded", "failed", "succeeded", "succeeded", "failed"],
                           "val_f1_macro": [0.70, None, 0.80, 0.70, None]})
    table = rank(summarise(trials, by="name", columns=["val_f1_macro"]), column="val_f1_macro_mean")
    assert table["name"].tolist() == ["b", "a", "c"] and table["rank"].tolist() == [1, 2, None]
    assert table["succeeded"].tolist() == [2, 1, 0] and table["trials"].tolist() == [2, 2, 1]
    assert table["val_f1_macro_mean"].tolist()[:2] == [pytest.approx(0.75), pytest.approx(0.70)]
    assert table["val_f1_macro_std"].iloc[0] == pytest.approx(math.sqrt(0.005))


# --- a real grid on the small demo -----------------------------------------------------------------

@pytest.fixture(scope="module")
def grid_study(tmp_path_factory, small_demo_session):
    """Three named configs x two seeds: two train, one crashes in its training process (LoRA on a CNN)."""
    session = copy_session(small_demo_session, tmp_path_factory.mktemp("grid") / "session")
    grid = parse_grid({"configs": [{"name": "narrow", "set": {}},
                                   {"name": "wider", "set": {"model.cnn_channels": [16, 16, 16, 16]}},
                                   {"name": "crashes", "set": {"model.lora.enabled": True}}]})
    events = []
    with Store.open(session) as store:
        outcome = studies.run_grid(store, preset="demo-fast", grid=grid, seeds=[1, 2], overrides=TINY_CNN,
                                   progress=False, on_event=events.append)
        runs = store.runs()
        manifests = {r: pd.read_parquet(Path(store.run(r)["run_dir"]) / "manifest.parquet") for r in runs.id
                     if store.run(r)["kind"] == "train" and store.run(r)["status"] == "succeeded"}
    return outcome, runs, manifests, events


def test_every_config_trains_at_every_seed_as_an_ordinary_run(grid_study):
    outcome, runs, manifests, _ = grid_study
    study = outcome.study
    assert [(t.name, t.seed) for t in study.trials] == [(n, s) for n in ("narrow", "wider", "crashes") for s in (1, 2)]
    trained = runs[runs.kind == "train"].set_index("id")
    assert sorted(trained.index) == sorted(t.run_id for t in study.trials)
    for trial in study.trials[:4]:
        assert trial.status == "succeeded" and trained.at[trial.run_id, "status"] == "succeeded"
        config = ExperimentConfig.from_dict(json.loads(trained.at[trial.run_id, "config"]))
        assert config.train.seed == trial.seed and config.train.epochs == 1
        assert config.model.cnn_channels == ([16, 16, 16, 16] if trial.name == "wider" else [8, 16, 16, 16])
        assert trained.at[trial.run_id, "manifest_decision_id"] == study.as_of  # every trial sees the same labels
    first, *others = manifests.values()
    for manifest in others:
        pd.testing.assert_frame_equal(manifest[["clip_id", "label", "split"]], first[["clip_id", "label", "split"]])


def test_a_crashing_config_is_recorded_as_its_trials_failure_and_the_study_goes_on(grid_study):
    outcome, runs, _, events = grid_study
    crashed = [t for t in outcome.study.trials if t.name == "crashes"]
    assert [t.status for t in crashed] == ["failed", "failed"]
    assert all("LoRA adapters apply to the 'ast' model only" in t.error for t in crashed)
    assert set(runs.set_index("id").loc[[t.run_id for t in crashed], "status"]) == {"failed"}
    assert outcome.status == "succeeded" and outcome.report["counts"] == {"succeeded": 4, "failed": 2, "cancelled": 0,
                                                                          "pending": 0}
    assert [e["done"] for e in events] == [1, 2, 3, 4, 5, 6] and events[-1]["eta_s"] == 0
    assert events[-1]["best"]["name"] == outcome.report["best"]["name"]
    assert any("crashes seed 1 (run" in line and "failed" in line for line in outcome.lines())


def test_the_report_ranks_configs_on_val_over_seeds_with_each_number_from_its_runs(grid_study):
    outcome, runs, _, _ = grid_study
    report, files = outcome.report, outcome.files
    configs = report["configs"]
    assert [c["name"] for c in configs][-1] == "crashes" and configs[-1]["rank"] is None
    means = [c["val_f1_macro_mean"] for c in configs[:2]]
    assert means == sorted(means, reverse=True) and [c["rank"] for c in configs[:2]] == [1, 2]
    for config in configs[:2]:
        values = [json.loads((Path(r) / "metrics.json").read_text())["splits"]["val"]["given"]["f1_macro"]
                  for r in runs.set_index("id").loc[[t.run_id for t in outcome.study.trials if t.name == config["name"]],
                                                    "run_dir"]]
        assert config["val_f1_macro_mean"] == pytest.approx(sum(values) / 2)
        assert config["val_f1_macro_std"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
    best = report["best"]
    assert best["name"] == configs[0]["name"] and best["run_id"] in {t.run_id for t in outcome.study.trials}
    stored = runs.set_index("id").loc[outcome.study_id]
    assert stored["kind"] == "study" and stored["status"] == "succeeded"
    assert json.loads(stored["summary"])["best"]["name"] == best["name"]
    assert pd.read_csv(files["csv"])["name"].tolist() == [c["name"] for c in configs]
    assert len(pd.read_csv(files["trials_csv"])) == 6
    markdown = files["markdown"].read_text()
    assert f"| 1 | {best['name']} | 2/2 |" in markdown and "## Failed trials" in markdown
    assert files["plot"].stat().st_size > 5000
    timing = report["timing"]
    assert timing["trials_timed"] == 6 and 0 < timing["overhead_share"] < 1


def test_two_configs_compare_over_their_seeds_with_a_verdict(grid_study, capsys):
    outcome = grid_study[0]
    session, study_id = outcome.study.study_dir.parent.parent, outcome.study_id
    code = app.main(["compare", "--session", str(session), f"{study_id}:narrow", f"{study_id}:wider", "--json"])
    comparison = json.loads(capsys.readouterr().out)
    assert code == 0 and comparison["seeds"] == {"baseline": 2, "candidate": 2} and comparison["split"] == "test"
    configs = {c["name"]: c for c in outcome.report["configs"]}
    for metric in ("accuracy", "f1_macro"):
        expected = configs["wider"][f"test_{metric}_mean"] - configs["narrow"][f"test_{metric}_mean"]
        assert comparison["overall"][metric]["delta"]["delta"] == pytest.approx(expected)
    assert set(comparison["per_class"]) == set(comparison["labels"]) and comparison["rare_classes"]
    assert comparison["verdict"]["headline"].startswith(("go: ", "no-go: "))
    assert Path(comparison["files"]["markdown"]).read_text().startswith(f"test: {study_id}:wider (2 seeds) vs")
    best = outcome.report["best"]["name"]
    code = app.main(["compare", "--session", str(session), f"{study_id}:narrow", study_id])  # a study alone: its best
    assert code == 0 and f"{study_id}:{best} (2 seeds)" in capsys.readouterr().out
    code = app.main(["compare", "--session", str(session), f"{study_id}:narrow", f"{study_id}:nope"])
    err = capsys.readouterr().err
    assert code == 2 and err == (f"earmark: error: {study_id}:nope: study {study_id} has no config 'nope'; its configs: "
                                 "narrow, wider, crashes\n")


def test_a_stopped_grid_keeps_finished_trials_and_a_resume_trains_only_the_rest(tmp_path, small_demo_session):
    session = copy_session(small_demo_session, tmp_path / "session")
    grid = parse_grid({"grid": {"train.lr": [0.002, 0.004]}})
    with Store.open(session) as store:
        def stop_after_first(event):  # as a UI's Cancel would, from outside the study's loop
            studies.cancel_study(store.run(event["study_id"])["run_dir"])

        stopped = studies.run_grid(store, preset="demo-fast", grid=grid, seeds=[7], overrides=TINY_CNN, progress=False,
                                   on_event=stop_after_first)
        assert stopped.status == "cancelled" and [t.status for t in stopped.study.trials] == ["succeeded", "pending"]
        assert store.run(stopped.study_id)["status"] == "cancelled" and len(store.runs(kind="train")) == 1
        assert "resume with --resume" in stopped.lines()[0]
        finished = stopped.study.trials[0].run_id

        resumed = studies.resume_study(store, stopped.study_id, progress=False)
        assert resumed.status == "succeeded" and [t.status for t in resumed.study.trials] == ["succeeded"] * 2
        assert resumed.study.trials[0].run_id == finished and len(store.runs(kind="train")) == 2
        assert store.run(stopped.study_id)["status"] == "succeeded"
        again = studies.resume_study(store, stopped.study_id, progress=False)  # nothing left: nothing trains
        assert len(store.runs(kind="train")) == 2 and again.report["counts"]["succeeded"] == 2


# --- bad input: one line, before anything trains -----------------------------------------------------

@pytest.fixture(scope="module")
def untouched_session(tmp_path_factory, small_demo_session) -> Path:
    return copy_session(small_demo_session, tmp_path_factory.mktemp("refusals") / "session")


@pytest.mark.parametrize("grid, message", [
    ({"model.lora_rank": [4, 8]}, "grid config 'model.lora_rank=4': unknown key 'model.lora_rank'; allowed: "),
    ({"train.lr": [0.001, -1]}, "grid config 'train.lr=-1': train.lr: -1.0 is out of range (0, 10]"),
    ({"train.schedule": ["cosine", "steps"]}, "grid config 'train.schedule=steps': train.schedule: 'steps' is not one of "
                                              "'cosine', 'linear', 'constant'"),
    ({"model.name": ["cnn", "resnet"]}, "grid config 'model.name=resnet': model.name: 'resnet' is not a registered model"),
    ({"train.seed": [1, 2]}, "grid config 'train.seed=1': sets train.seed; seeds are given with --seeds"),
])
def test_a_grid_the_preset_refuses_is_one_line_and_nothing_is_created(untouched_session, grid, message):
    with Store.open(untouched_session) as store:
        with pytest.raises(ConfigError) as refused:
            studies.run_grid(store, preset="demo-fast", grid=parse_grid(grid), seeds=[1], progress=False)
        assert str(refused.value).startswith(message) and "\n" not in str(refused.value)
        assert store.runs().empty
    assert not (untouched_session / "runs").exists()


def test_the_grid_command_refuses_bad_input_in_one_line(untouched_session, tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text("grid:\n  model.lora_rank: [4, 8, 16, 32]\n")
    code = app.main(["grid", "--session", str(untouched_session), "--grid", str(grid), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("earmark: error: grid config 'model.lora_rank=4': unknown key") and err.count("\n") == 1
    for args, start in ((["--seeds", "1,x"], "seeds: 'x' is not a whole number"),
                        (["--parallel", "0"], "parallel: 0 must be a whole number >= 1"),
                        (["--resume", "nope", "--seeds", "1"], "--seeds does not apply to --resume")):
        code = app.main(["grid", "--session", str(untouched_session), "--quiet", *args])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith(f"earmark: error: {start}") and err.count("\n") == 1, err
