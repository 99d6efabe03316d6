"""Model zoo: registry, CNN, AST (scratch and pretrained folder), LoRA, checkpoints.

Everything runs tiny on CPU with HF_HUB_OFFLINE=1: nothing is downloaded.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchaudio

from core.checkpoint import (WEIGHTS_FILE, checkpoint_dir, checkpoint_labels, has_checkpoint, init_from_checkpoint,
                             load_checkpoint, save_checkpoint)
from core.config import FeatureConfig, LoraSettings, ModelConfig
from core.models import available_models, build_model, count_parameters, register_model
from core.models.lora import has_lora_adapters, merge_lora

LABELS = ["siren", "alert", "traffic"]
# 0.5 s at 8 kHz, hop 128 -> 32 frames; 32 mels: the smallest input an AST (16x16 patches) takes well.
FEATURES = FeatureConfig(sample_rate_hz=8000, n_mels=32, n_fft=256, hop_length=128, max_length_s=0.5)
TINY_CNN = ModelConfig(name="cnn", cnn_channels=[8, 16], head_dropout=0.0)
TINY_AST = ModelConfig(name="ast", ast_hidden_size=32, ast_layers=2, ast_heads=2, ast_patch_stride=8,
                       head_dropout=0.0)
TINY_LORA = dataclasses.replace(TINY_AST, lora=LoraSettings(enabled=True, rank=4, alpha=8, dropout=0.0))

# peft 0.21 calls a transformers 5 method that is deprecated there: library noise, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


@pytest.fixture(autouse=True)
def seeded(monkeypatch):
    """Seed torch for each test, restore the RNG afterwards, and keep the hub offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    state = torch.get_rng_state()
    torch.manual_seed(0)
    yield
    torch.set_rng_state(state)


def make_features(batch: int, feature_cfg: FeatureConfig = FEATURES) -> torch.Tensor:
    return torch.randn(batch, feature_cfg.n_mels, feature_cfg.n_frames)


def tone_log_mels(frequencies_hz: list[float], *, per_class: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy sine tones (random phase and level) -> normalised log-mel (N, 32, 32) and class ids."""
    sr, n = FEATURES.sample_rate_hz, FEATURES.n_samples
    t = torch.arange(n) / sr
    waves, targets = [], []
    for class_id, freq in enumerate(frequencies_hz):
        for _ in range(per_class):
            phase, level = torch.rand(2, generator=generator)
            wave = (0.2 + 0.6 * level) * torch.sin(2 * math.pi * freq * t + 2 * math.pi * phase)
            waves.append(wave + 0.05 * torch.randn(n, generator=generator))
            targets.append(class_id)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=sr, n_fft=FEATURES.n_fft,
                                               hop_length=FEATURES.hop_length, n_mels=FEATURES.n_mels)
    log_mel = torchaudio.transforms.AmplitudeToDB(top_db=80)(mel(torch.stack(waves)))
    return (log_mel - log_mel.mean()) / log_mel.std(), torch.tensor(targets)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def save_tiny(folder, model, model_cfg, **extra_kwargs):
    return save_checkpoint(folder, model=model, model_cfg=model_cfg, feature_cfg=FEATURES, labels=model.labels,
                           norm_stats={"mean": np.full(FEATURES.n_mels, -30.0), "std": 12.5}, **extra_kwargs)


# --- registry --------------------------------------------------------------------------

def test_registry_lists_builtins_and_rejects_unknown_names():
    assert {"cnn", "ast"} <= set(available_models())
    with pytest.raises(ValueError, match=r"'resnet' is not a registered model; available: .*ast.*cnn"):
        build_model(ModelConfig(name="resnet"), feature_cfg=FEATURES, labels=LABELS)
    with pytest.raises(ValueError, match="already registered"):
        register_model("cnn")(lambda *a, **k: None)


def test_build_model_validates_labels():
    with pytest.raises(ValueError, match="unique"):
        build_model(TINY_CNN, feature_cfg=FEATURES, labels=["a", "a"])
    with pytest.raises(ValueError, match="at least 2"):
        build_model(TINY_CNN, feature_cfg=FEATURES, labels=["a"])


# --- cnn -------------------------------------------------------------------------------

def test_cnn_forward_shape_and_one_step_lowers_loss_on_fixed_batch():
    model = build_model(TINY_CNN, feature_cfg=FEATURES, labels=LABELS)
    x, y = make_features(8), torch.arange(8) % 3
    assert model(x).shape == (8, 3) and model(x).dtype == torch.float32
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = train_step(model, optimizer, x, y)
    model.eval()  # compare on the same BN statistics path both times
    with torch.no_grad():
        after = F.cross_entropy(model(x), y).item()
    assert after < before
    assert model.labels == LABELS


def test_cnn_overfits_three_pitch_classes():
    x, y = tone_log_mels([300.0, 900.0, 2500.0], per_class=4, generator=torch.Generator().manual_seed(7))
    assert x.shape == (12, FEATURES.n_mels, FEATURES.n_frames)
    model = build_model(TINY_CNN, feature_cfg=FEATURES, labels=LABELS)
    optimizer = torch.optim.AdamW(model.parameter_groups(backbone_lr=3e-3, head_lr=3e-3, weight_decay=0.0))
    for _ in range(40):
        train_step(model, optimizer, x, y)
    model.eval()
    with torch.no_grad():
        assert (model(x).argmax(dim=1) == y).all()


def test_cnn_handles_the_smallest_feature_size_and_rejects_bad_input():
    tiny = FeatureConfig(n_mels=8, max_length_s=0.05)
    model = build_model(TINY_CNN, feature_cfg=tiny, labels=LABELS)
    assert model(make_features(2, tiny)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"expected shape \(batch, n_mels, n_frames\), got \(32, 32\)"):
        model(torch.zeros(32, 32))
    with pytest.raises(ValueError, match="model.cnn_channels"):
        build_model(dataclasses.replace(TINY_CNN, cnn_channels=[]), feature_cfg=FEATURES, labels=LABELS)
    with pytest.raises(ValueError, match="model.lora.enabled.*'ast' model only"):
        build_model(dataclasses.replace(TINY_CNN, lora=LoraSettings(enabled=True)), feature_cfg=FEATURES, labels=LABELS)


def test_parameter_groups_split_learning_rates_and_exempt_biases_and_norms():
    model = build_model(TINY_CNN, feature_cfg=FEATURES, labels=LABELS)
    groups = {g["name"]: g for g in model.parameter_groups(backbone_lr=5e-5, head_lr=1e-3, weight_decay=0.01)}
    assert set(groups) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    assert {g["lr"] for n, g in groups.items() if n.startswith("head")} == {1e-3}
    assert {g["lr"] for n, g in groups.items() if n.startswith("backbone")} == {5e-5}
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = [names[id(p)] for g in groups.values() if g["weight_decay"] == 0.0 for p in g["params"]]
    assert sorted(no_decay) == sorted(n for n, p in model.named_parameters() if p.ndim == 1)  # biases + BN scales
    assert "head.weight" in [names[id(p)] for p in groups["head"]["params"]]
    assert sum(len(g["params"]) for g in groups.values()) == len(names)
    torch.optim.AdamW(list(groups.values()))  # AdamW accepts the groups as they are
    with pytest.raises(ValueError, match="backbone_lr must be > 0, got 0"):
        model.parameter_groups(backbone_lr=0, head_lr=1e-3, weight_decay=0.01)


# --- ast -------------------------------------------------------------------------------

def test_tiny_ast_from_config_runs_forward_and_backward():
    model = build_model(TINY_AST, feature_cfg=FEATURES, labels=LABELS)
    assert model.ast_config.num_mel_bins == 32 and model.ast_config.max_length == 32
    logits = model(make_features(4))
    assert logits.shape == (4, 3)
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    patch_grad = model.network.audio_spectrogram_transformer.embeddings.patch_embeddings.projection.weight.grad
    assert patch_grad is not None and patch_grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"expected shape \(batch, 32, 32\)"):
        model(torch.zeros(1, 32, 40))


def test_ast_config_sizes_are_validated():
    with pytest.raises(ValueError, match="ast_hidden_size: 30 must be divisible by model.ast_heads"):
        build_model(dataclasses.replace(TINY_AST, ast_hidden_size=30, ast_heads=4), feature_cfg=FEATURES, labels=LABELS)
    with pytest.raises(ValueError, match="features.n_mels: .* at least 16, got 8"):
        build_model(TINY_AST, feature_cfg=FeatureConfig(n_mels=8, max_length_s=1.0), labels=LABELS)


@pytest.fixture
def pretrained_folder(tmp_path):
    """A tiny AST trained on 3 other labels, saved with transformers' save_pretrained."""
    source = build_model(TINY_AST, feature_cfg=FEATURES, labels=["x", "y", "z"])
    folder = tmp_path / "pretrained"
    source.network.save_pretrained(folder)
    return folder, source


def test_pretrained_folder_loads_backbone_with_a_new_head(pretrained_folder):
    folder, source = pretrained_folder
    labels = ["a", "b", "c", "d"]
    model = build_model(dataclasses.replace(TINY_AST, pretrained=str(folder)), feature_cfg=FEATURES, labels=labels)
    assert model.network.classifier.dense.weight.shape == (4, 32)
    assert model.network.config.id2label == dict(enumerate(labels))
    saved, loaded = source.state_dict(), model.state_dict()
    backbone = [k for k in saved if "audio_spectrogram_transformer" in k]
    assert len(backbone) > 20 and all(torch.equal(saved[k], loaded[k]) for k in backbone)
    assert model(make_features(2)).shape == (2, 4)


def test_pretrained_head_is_fresh_even_when_the_class_count_matches(pretrained_folder):
    folder, source = pretrained_folder
    model = build_model(dataclasses.replace(TINY_AST, pretrained=str(folder)), feature_cfg=FEATURES, labels=LABELS)
    assert not torch.equal(model.network.classifier.dense.weight, source.network.classifier.dense.weight)
    assert torch.count_nonzero(model.network.classifier.dense.bias) == 0


def test_pretrained_on_longer_clips_interpolates_time_positions(pretrained_folder):
    folder, source = pretrained_folder
    longer = dataclasses.replace(FEATURES, max_length_s=1.0)  # 63 frames instead of 32
    model = build_model(dataclasses.replace(TINY_AST, pretrained=str(folder)), feature_cfg=longer, labels=LABELS)
    positions = model.network.audio_spectrogram_transformer.embeddings.position_embeddings
    old = source.network.audio_spectrogram_transformer.embeddings.position_embeddings
    assert positions.shape == (1, 2 + 3 * 6, 32) and old.shape == (1, 2 + 3 * 3, 32)
    assert torch.equal(positions[:, :2], old[:, :2])  # [CLS] and distillation tokens untouched
    assert model(make_features(2, longer)).shape == (2, 3)


def test_pretrained_with_other_mel_count_names_both_values(pretrained_folder):
    folder, _ = pretrained_folder
    with pytest.raises(ValueError, match="trained on 32 mel bins but features.n_mels is 64"):
        build_model(dataclasses.replace(TINY_AST, pretrained=str(folder)),
                    feature_cfg=dataclasses.replace(FEATURES, n_mels=64), labels=LABELS)


def test_pretrained_folder_without_a_model_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="holds no readable transformers config"):
        build_model(dataclasses.replace(TINY_AST, pretrained=str(tmp_path)), feature_cfg=FEATURES, labels=LABELS)


def test_uncached_hub_id_fails_fast_and_clearly_offline():
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"'earmark-tests/no-such-ast' is not a local folder and was not found "
                                         r"in the local Hugging Face cache.*nothing can be downloaded"):
        build_model(dataclasses.replace(TINY_AST, pretrained="earmark-tests/no-such-ast"),
                    feature_cfg=FEATURES, labels=LABELS)
    assert time.perf_counter() - start < 5


def test_failed_download_becomes_the_same_clear_error(monkeypatch):
    """Online mode: the hub is tried (no network here, so the attempt is simulated) and its error converted."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    calls = []

    def unreachable_hub(location, **kwargs):
        calls.append(kwargs)
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection.")

    from transformers import AutoConfig  # core.models.ast imports it only when an AST is built

    monkeypatch.setattr(AutoConfig, "from_pretrained", unreachable_hub)
    with pytest.raises(ValueError, match=r"not found in the local Hugging Face cache, and it could not be "
                                         r"downloaded either \(We couldn't connect to 'https://huggingface.co'"):
        build_model(dataclasses.replace(TINY_AST, pretrained="earmark-tests/no-such-ast"),
                    feature_cfg=FEATURES, labels=LABELS)
    assert calls == [{"local_files_only": False}]


# --- lora ------------------------------------------------------------------------------

def test_lora_trains_only_adapters_and_head_and_merges_exactly():
    model = build_model(TINY_LORA, feature_cfg=FEATURES, labels=LABELS)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(("lora_" in n) or ("classifier.modules_to_save" in n) for n in trainable)
    assert any(".q_proj.lora_A" in n for n in trainable) and any(".v_proj.lora_B" in n for n in trainable)
    assert not any(".k_proj." in n or ".fc1." in n for n in trainable)
    assert count_parameters(model, trainable_only=True) < 0.1 * count_parameters(model)

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameter_groups(backbone_lr=1e-2, head_lr=1e-2, weight_decay=0.0))
    train_step(model, optimizer, make_features(4), torch.tensor([0, 1, 2, 0]))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any("lora_B" in n for n in changed) and any("modules_to_save" in n for n in changed)
    assert changed <= trainable  # frozen base weights and the original head stay put

    x = make_features(3)
    model.eval()
    with torch.no_grad():
        adapted = model(x)
        merge_lora(model)
        merged = model(x)
    assert not has_lora_adapters(model)
    assert torch.allclose(adapted, merged, atol=1e-5)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("targets", [["query", "value"], ["q_proj", "value"], []])
def test_lora_targets_that_match_nothing_list_real_names(targets):
    cfg = dataclasses.replace(TINY_LORA, lora=LoraSettings(enabled=True, target_modules=targets))
    with pytest.raises(ValueError, match=r"model.lora.target_modules: .*can be adapted: fc1, fc2, k_proj, o_proj, q_proj, v_proj"):
        build_model(cfg, feature_cfg=FEATURES, labels=LABELS)


# --- checkpoints -----------------------------------------------------------------------

@pytest.mark.parametrize("model_cfg", [TINY_CNN, TINY_AST, TINY_LORA], ids=["cnn", "ast", "lora"])
def test_checkpoint_round_trip_gives_identical_logits(tmp_path, model_cfg):
    model = build_model(model_cfg, feature_cfg=FEATURES, labels=LABELS)
    optimizer = torch.optim.AdamW(model.parameter_groups(backbone_lr=1e-2, head_lr=1e-2, weight_decay=0.0))
    train_step(model, optimizer, make_features(4), torch.tensor([0, 1, 2, 0]))  # BN stats + adapters move
    folder = save_tiny(tmp_path / "ckpt", model, model_cfg, extra={"run_id": "r1", "step": np.int64(7)})
    model.eval()
    x = make_features(3)
    loaded = load_checkpoint(folder)
    assert not loaded.model.training
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    assert (loaded.model_cfg, loaded.feature_cfg, loaded.labels) == (model_cfg, FEATURES, LABELS)
    assert loaded.norm_stats == {"mean": [-30.0] * 32, "std": 12.5}
    assert loaded.extra == {"run_id": "r1", "step": 7}


def test_pretrained_ast_checkpoint_rebuilds_without_its_source(pretrained_folder, tmp_path):
    folder, _ = pretrained_folder
    longer = dataclasses.replace(FEATURES, max_length_s=1.0)
    model_cfg = dataclasses.replace(TINY_LORA, pretrained=str(folder))
    model = build_model(model_cfg, feature_cfg=longer, labels=LABELS).eval()
    ckpt = save_checkpoint(tmp_path / "ckpt", model=model, model_cfg=model_cfg, feature_cfg=longer,
                           labels=LABELS, norm_stats={})
    for file in folder.iterdir():
        file.unlink()
    x = make_features(2, longer)
    with torch.no_grad():
        assert torch.equal(load_checkpoint(ckpt).model(x), model(x))


def test_merged_lora_exports_as_plain_ast(tmp_path):
    model = build_model(TINY_LORA, feature_cfg=FEATURES, labels=LABELS).eval()
    merge_lora(model)
    with pytest.raises(ValueError, match="lora.enabled is True but the model has no LoRA adapters"):
        save_tiny(tmp_path / "bad", model, TINY_LORA)
    folder = save_tiny(tmp_path / "merged", model, TINY_AST)
    x = make_features(2)
    with torch.no_grad():
        assert torch.equal(load_checkpoint(folder).model(x), model(x))


def test_loaded_checkpoint_trains_further(tmp_path):
    model = build_model(TINY_LORA, feature_cfg=FEATURES, labels=LABELS)
    loaded = load_checkpoint(save_tiny(tmp_path / "ckpt", model, TINY_LORA)).model.train()
    x, y = make_features(6), torch.arange(6) % 3
    optimizer = torch.optim.AdamW(loaded.parameter_groups(backbone_lr=1e-2, head_lr=1e-2, weight_decay=0.0))
    losses = [train_step(loaded, optimizer, x, y) for _ in range(5)]
    assert losses[-1] < losses[0]


def test_init_from_checkpoint_keeps_backbone_and_renews_head_for_new_labels(tmp_path):
    trained = build_model(TINY_CNN, feature_cfg=FEATURES, labels=LABELS)
    folder = save_tiny(tmp_path / "ckpt", trained, TINY_CNN)

    same = build_model(TINY_CNN, feature_cfg=FEATURES, labels=LABELS)
    report = init_from_checkpoint(same, folder)
    assert report.kept_fresh == [] and report.unused == [] and len(report.copied) == len(trained.state_dict())

    relabelled = build_model(TINY_CNN, feature_cfg=FEATURES, labels=["scream", "siren", "alert"])
    report = init_from_checkpoint(relabelled, folder)
    assert report.kept_fresh == ["head.bias", "head.weight"] and report.unused == ["head.bias", "head.weight"]
    assert torch.equal(relabelled.blocks[0][0].weight, trained.blocks[0][0].weight)
    assert not torch.equal(relabelled.head.weight, trained.head.weight)
    assert "copied 12 of 14 tensors; 2 kept freshly initialised (head.bias, head.weight)" in str(report)

    with pytest.raises(ValueError, match="none of its weights fit this ASTClassifier .*'cnn' model"):
        init_from_checkpoint(build_model(TINY_AST, feature_cfg=FEATURES, labels=LABELS), folder)


def test_a_run_folder_checkpoint_is_found_through_the_checkpoint_module(tmp_path):
    """Callers ask checkpoint_dir / has_checkpoint / checkpoint_labels instead of spelling the layout."""
    folder = checkpoint_dir(tmp_path / "run")
    assert folder.parent == tmp_path / "run" and not has_checkpoint(folder)
    save_tiny(folder, build_model(TINY_CNN, feature_cfg=FEATURES, labels=LABELS), TINY_CNN)
    assert has_checkpoint(folder) and checkpoint_labels(folder) == LABELS
    (folder / "config.json").unlink()  # saving never finished: config.json is written last
    assert not has_checkpoint(folder)


def _truncate_weights(folder):
    path = folder / WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[:100])


def _garble_config(folder):
    (folder / "config.json").write_text("{not json")


def _future_version(folder):
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "format_version": 99}))


def _shrink_head(folder):
    path = folder / "config.json"
    description = json.loads(path.read_text())
    path.write_text(json.dumps({**description, "labels": ["a", "b"]}))


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / WEIGHTS_FILE).unlink(), "no model.safetensors"),
    (lambda f: (f / "config.json").unlink(), "no config.json"),
    (_truncate_weights, "model.safetensors does not fit the described model or is corrupt"),
    (_garble_config, "config.json is not valid JSON"),
    (_future_version, "format_version 99 is not the supported version 1"),
    (_shrink_head, "does not fit the described model"),
], ids=["no-weights", "no-config", "truncated-weights", "bad-json", "future-version", "wrong-labels"])
def test_damaged_checkpoint_raises_value_error_naming_folder(tmp_path, damage, message):
    folder = save_tiny(tmp_path / "ckpt", build_model(TINY_CNN, feature_cfg=FEATURES, labels=LABELS), TINY_CNN)
    damage(folder)
    with pytest.raises(ValueError, match=f"checkpoint {folder}: .*{message}"):
        load_checkpoint(folder)


def test_missing_checkpoint_folder_and_bad_inputs_are_rejected(tmp_path):
    with pytest.raises(ValueError, match=f"checkpoint {tmp_path / 'nowhere'}: no such folder"):
        load_checkpoint(tmp_path / "nowhere")
    model = build_model(TINY_CNN, feature_cfg=FEATURES, labels=LABELS)
    with pytest.raises(ValueError, match="labels: .* differ from the model's output labels"):
        save_checkpoint(tmp_path / "c", model=model, model_cfg=TINY_CNN, feature_cfg=FEATURES,
                        labels=["a", "b", "c"], norm_stats={})
    with pytest.raises(ValueError, match="norm_stats/extra: not JSON-serialisable"):
        save_tiny(tmp_path / "c", model, TINY_CNN, extra={"when": object()})
