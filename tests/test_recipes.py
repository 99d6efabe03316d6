"""Training recipes: class weights and losses, batch composition and sampling, the LR
schedule and MixUp. Expected values are worked out by hand in the comments."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from core.config import CurriculumStage, TrainConfig
from core.losses import ClassificationLoss, build_loss, class_weights
from core.mixup import mixup
from core.sampling import (
    ComposedBatchSampler,
    curriculum_extra_indices,
    oversampled_indices,
    stage_for_epoch,
    total_epochs,
)
from core.schedule import apply_lr, lr_multiplier


def random_logits(batch: int, classes: int, *, seed: int = 0) -> torch.Tensor:
    return 3 * torch.randn(batch, classes, generator=torch.Generator().manual_seed(seed))


# --- class weights ------------------------------------------------------------------------

def test_balanced_weights_are_inverse_frequency_averaging_one():
    # 1/n = [0.01, 0.1, 1], mean 0.37 -> [1/37, 10/37, 100/37]
    weights = class_weights([100, 10, 1], method="balanced")
    assert weights.dtype == torch.float32 and weights.shape == (3,)
    torch.testing.assert_close(weights, torch.tensor([1 / 37, 10 / 37, 100 / 37]))


def test_sqrt_weights():
    # 1/sqrt(n) = [0.1, 0.316228, 1], sum 1.416228 -> times 3 / 1.416228
    torch.testing.assert_close(class_weights([100, 10, 1], method="sqrt"),
                               torch.tensor([0.211830, 0.669866, 2.118303]))


def test_effective_number_weights():
    # beta 0.9: 0.1 / (1 - 0.9^n) = [0.1000027, 0.1535340, 1.0], mean 0.4178456
    torch.testing.assert_close(class_weights([100, 10, 1], method="effective", beta=0.9),
                               torch.tensor([0.239329, 0.367442, 2.393229]))
    # beta 0 counts every class as one sample: no weighting
    torch.testing.assert_close(class_weights([100, 10, 1], method="effective", beta=0.0), torch.ones(3))


def test_class_without_clips_gets_weight_zero_and_the_rest_average_one():
    # present 1/n = [0.25, 1], mean 0.625 -> [0.4, 1.6]; the empty class gets 0
    torch.testing.assert_close(class_weights([4, 0, 1], method="balanced"), torch.tensor([0.4, 0.0, 1.6]))
    torch.testing.assert_close(class_weights([4, 0, 1], method="none"), torch.ones(3))


def test_class_weights_reject_bad_input_naming_the_parameter():
    with pytest.raises(ValueError, match="method: 'inverse'.*valid: none, balanced, effective, sqrt"):
        class_weights([1, 2], method="inverse")
    with pytest.raises(ValueError, match="counts"):
        class_weights([3, -1], method="balanced")
    with pytest.raises(ValueError, match="beta: 1.0"):
        class_weights([3, 1], method="effective", beta=1.0)


# --- losses -------------------------------------------------------------------------------

def test_weighted_smoothed_ce_matches_torch_for_hard_targets():
    logits, targets = random_logits(16, 4), torch.tensor([0, 1, 2, 3] * 4)
    weight = torch.tensor([0.5, 1.0, 2.0, 0.5])
    loss = ClassificationLoss(weight=weight, label_smoothing=0.1)(logits, targets)
    expected = F.cross_entropy(logits, targets, weight=weight, label_smoothing=0.1)
    torch.testing.assert_close(loss, expected)


def test_soft_one_hot_targets_give_the_hard_target_loss():
    logits, targets = random_logits(12, 3, seed=1), torch.tensor([0, 1, 2, 2, 1, 0, 0, 0, 1, 2, 2, 2])
    for gamma in (0.0, 2.0):
        loss = ClassificationLoss(weight=torch.tensor([1.0, 3.0, 0.2]), gamma=gamma, label_smoothing=0.05)
        torch.testing.assert_close(loss(logits, F.one_hot(targets, 3).float()), loss(logits, targets))


def test_weighted_soft_targets_divide_by_expected_class_weight():
    # p = softmax([ln 3, 0]) = [0.75, 0.25]; -log p = [0.287682, 1.386294]
    # (1 * 0.25 * 0.287682 + 3 * 0.75 * 1.386294) / (1 * 0.25 + 3 * 0.75) = 3.191082 / 2.5
    loss = ClassificationLoss(weight=torch.tensor([1.0, 3.0]))
    value = loss(torch.tensor([[math.log(3), 0.0]]), torch.tensor([[0.25, 0.75]]))
    assert value.item() == pytest.approx(1.2764328, abs=1e-6)


def test_focal_with_gamma_zero_is_ce():
    logits = random_logits(10, 5, seed=2)
    soft = torch.softmax(random_logits(10, 5, seed=3), dim=1)
    weight = torch.tensor([1.0, 2.0, 0.5, 1.0, 0.5])
    ce = build_loss(TrainConfig(loss="ce"), class_counts=[1] * 5)
    focal = build_loss(TrainConfig(loss="focal", focal_gamma=0.0), class_counts=[1] * 5)
    torch.testing.assert_close(focal(logits, soft), ce(logits, soft))
    torch.testing.assert_close(ClassificationLoss(weight=weight, gamma=0.0)(logits, soft),
                               -(weight * soft * torch.log_softmax(logits, 1)).sum() / (soft @ weight).sum())


def test_focal_down_weights_easy_examples_only():
    focal = build_loss(TrainConfig(loss="focal", focal_gamma=2.0), class_counts=[5, 5, 5])
    ce = build_loss(TrainConfig(loss="ce"), class_counts=[5, 5, 5])
    easy, hard, target = torch.tensor([[4.0, 0.0, 0.0]]), torch.tensor([[0.0, 4.0, 0.0]]), torch.tensor([0])
    # easy: p = e^4 / (e^4 + 2) = 0.964663; CE 0.035976; focal (1 - p)^2 * CE = 4.4923e-5
    assert ce(easy, target).item() == pytest.approx(0.0359763, rel=1e-4)
    assert focal(easy, target).item() == pytest.approx(4.4923e-5, rel=1e-3)
    # hard: p = 1 / (e^4 + 2) = 0.017668; focal keeps (1 - p)^2 = 96.5% of CE
    assert focal(hard, target).item() / ce(hard, target).item() == pytest.approx(0.964977, rel=1e-4)


def test_focal_soft_targets_scale_each_class_term():
    # logits 0: p = [0.5, 0.5]; each term (0.5)^2 * ln 2 = 0.173287, weighted by q summing to 1
    loss = ClassificationLoss(weight=torch.ones(2), gamma=2.0)
    assert loss(torch.zeros(1, 2), torch.tensor([[0.3, 0.7]])).item() == pytest.approx(0.25 * math.log(2), abs=1e-6)


def test_build_loss_wires_config_weights_and_smoothing():
    cfg = TrainConfig(loss="focal", focal_gamma=1.5, class_weights="balanced", label_smoothing=0.1)
    loss = build_loss(cfg, class_counts=[100, 10, 1])
    assert loss.gamma == 1.5 and loss.label_smoothing == 0.1
    torch.testing.assert_close(loss.weight, torch.tensor([1 / 37, 10 / 37, 100 / 37]))


def test_loss_rejects_malformed_targets():
    loss = ClassificationLoss(weight=torch.ones(3))
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"targets: class ids must lie in \[0, 3\)"):
        loss(logits, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="sum to 1"):
        loss(logits, torch.tensor([[0.5, 0.2, 0.2], [1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"logits: expected shape \(B, 3\)"):
        loss(torch.zeros(2, 4), torch.tensor([0, 1]))


# --- composed batches ---------------------------------------------------------------------

LABELS = [0] * 3 + [1] * 20 + [2] * 8 + [3] * 5  # class 3 is not in the composition
COMPOSITION = {0: 2, 1: 4, 2: 2}


def test_every_batch_has_exactly_the_composition():
    sampler = ComposedBatchSampler(LABELS, composition=COMPOSITION, seed=7)
    batches = list(sampler)
    # one epoch = max(ceil(3/2), ceil(20/4), ceil(8/2)) = 5 batches
    assert len(sampler) == len(batches) == 5
    for batch in batches:
        assert Counter(LABELS[i] for i in batch) == Counter(COMPOSITION)


def test_small_classes_are_oversampled_by_cycling_and_the_largest_is_seen_once():
    batches = ComposedBatchSampler(LABELS, composition=COMPOSITION, seed=7).epoch_batches()
    seen = Counter(batches.ravel().tolist())
    assert sorted(seen[i] for i in range(3, 23)) == [1] * 20  # class 1: every clip exactly once
    # class 0: 10 draws from 3 clips in reshuffled passes -> 4, 3, 3 in some order
    assert sorted(seen[i] for i in range(3)) == [3, 3, 4]
    assert sorted(seen[i] for i in range(23, 31)) == [1] * 6 + [2] * 2  # class 2: 10 draws from 8 clips
    assert all(seen[i] == 0 for i in range(31, 36))  # class 3 is not in the composition


def test_a5_composition_fills_batches_of_32():
    labels = [c for c, n in enumerate([30, 200, 150, 400, 40, 300]) for _ in range(n)]
    sampler = ComposedBatchSampler(labels, composition={0: 10, 1: 5, 2: 5, 3: 4, 4: 4, 5: 4}, seed=0)
    assert sampler.batch_size == 32 and len(sampler) == 100  # ceil(400 / 4) traffic batches
    loader = DataLoader(TensorDataset(torch.tensor(labels)), batch_sampler=sampler)
    first = next(iter(loader))[0]
    assert first.tolist().count(0) == 10 and len(first) == 32


def test_composed_batches_repeat_per_seed_and_epoch_and_resume():
    a = ComposedBatchSampler(LABELS, composition=COMPOSITION, seed=3)
    b = ComposedBatchSampler(LABELS, composition=COMPOSITION, seed=3)
    assert list(a) == list(b)
    a.set_epoch(1)
    epoch_1 = list(a)
    assert epoch_1 != list(b)
    resumed = ComposedBatchSampler(LABELS, composition=COMPOSITION, seed=3)
    resumed.set_epoch(1)
    assert list(resumed) == epoch_1 == list(a)
    assert list(ComposedBatchSampler(LABELS, composition=COMPOSITION, seed=4)) != list(b)


def test_composed_sampler_rejects_a_class_without_clips():
    with pytest.raises(ValueError, match="composition: class 5 asks for 2 clips per batch but has no clips"):
        ComposedBatchSampler(LABELS, composition={0: 2, 5: 2}, seed=0)
    with pytest.raises(ValueError, match="num_batches: 0"):
        ComposedBatchSampler(LABELS, composition=COMPOSITION, seed=0, num_batches=0)


# --- oversampling and curriculum ----------------------------------------------------------

def test_oversampled_indices_counts():
    labels = [0] * 4 + [1] * 6 + [2] * 3
    order = oversampled_indices(labels, factors={0: 2, 1: 1.5, 2: 0}, seed=1, epoch=0)
    seen = Counter(order.tolist())
    assert [seen[i] for i in range(4)] == [2, 2, 2, 2]  # factor 2: every clip twice
    # factor 1.5 on 6 clips: all once plus round(0.5 * 6) = 3 of them once more -> 9
    assert sorted(seen[i] for i in range(4, 10)) == [1, 1, 1, 2, 2, 2]
    assert all(seen[i] == 0 for i in range(10, 13))  # factor 0 drops the class
    assert len(order) == 17 and order.dtype == np.int64
    assert order.tolist() != sorted(order.tolist())  # shuffled


def test_oversampled_indices_repeat_per_seed_and_epoch():
    labels = [0] * 10 + [1] * 10
    first = oversampled_indices(labels, factors={1: 1.5}, seed=5, epoch=2)
    np.testing.assert_array_equal(first, oversampled_indices(labels, factors={1: 1.5}, seed=5, epoch=2))
    assert first.tolist() != oversampled_indices(labels, factors={1: 1.5}, seed=5, epoch=3).tolist()
    with pytest.raises(ValueError, match="factors: class 4 has no clips"):
        oversampled_indices(labels, factors={4: 2.0}, seed=5, epoch=0)


def test_curriculum_extra_indices_draw_a_fraction_and_repeat_it():
    hard = list(range(100, 110))
    extra = curriculum_extra_indices(hard, repeat=2, fraction=0.5, seed=0, epoch=1)
    seen = Counter(extra.tolist())
    assert len(seen) == 5 and set(seen.values()) == {2} and set(seen) <= set(hard)
    np.testing.assert_array_equal(extra, curriculum_extra_indices(hard, repeat=2, fraction=0.5, seed=0, epoch=1))
    assert len(curriculum_extra_indices(hard, repeat=3, fraction=0.25, seed=0, epoch=1)) == 9  # 2.5 -> 3 clips
    assert len(curriculum_extra_indices(hard, repeat=2, fraction=0.0, seed=0, epoch=1)) == 0
    assert len(curriculum_extra_indices([], repeat=2, fraction=0.5, seed=0, epoch=1)) == 0


def test_stage_for_epoch_follows_stage_lengths():
    stages = [CurriculumStage(epochs=1), CurriculumStage(epochs=1, hard_examples=True), CurriculumStage(epochs=2)]
    assert total_epochs(stages) == 4
    assert [stage_for_epoch(stages, e)[0] for e in range(4)] == [0, 1, 2, 2]
    assert stage_for_epoch(stages, 1)[1] is stages[1]
    with pytest.raises(ValueError, match=r"epoch: 4 is out of range; the curriculum has epochs 0..3"):
        stage_for_epoch(stages, 4)


# --- LR schedule --------------------------------------------------------------------------

def test_warmup_ramps_linearly_to_one():
    values = [lr_multiplier(s, total_steps=12, warmup_steps=4, schedule="cosine") for s in range(5)]
    assert values == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])


def test_cosine_and_linear_decay_to_min_ratio():
    # after 4 warm-up steps, 8 decay steps: step 8 is halfway, step 6 a quarter of the way
    cosine = dict(total_steps=12, warmup_steps=4, schedule="cosine", min_ratio=0.1)
    assert lr_multiplier(8, **cosine) == pytest.approx(0.5 * (1 + 0.1))
    assert lr_multiplier(12, **cosine) == pytest.approx(0.1)
    linear = dict(total_steps=12, warmup_steps=4, schedule="linear", min_ratio=0.1)
    assert lr_multiplier(6, **linear) == pytest.approx(0.1 + 0.9 * 0.75)
    assert lr_multiplier(12, **linear) == pytest.approx(0.1)


def test_constant_and_no_warmup():
    assert {lr_multiplier(s, total_steps=10, warmup_steps=0, schedule="constant", min_ratio=0.5)
            for s in range(11)} == {1.0}
    assert lr_multiplier(0, total_steps=10, warmup_steps=0, schedule="cosine") == 1.0
    assert lr_multiplier(5, total_steps=10, warmup_steps=0, schedule="cosine") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="schedule: 'step'.*valid: cosine, linear, constant"):
        lr_multiplier(0, total_steps=10, warmup_steps=0, schedule="step")


def test_apply_lr_keeps_each_groups_base():
    head, backbone = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW([{"params": backbone.parameters(), "lr": 5e-5},
                                   {"params": head.parameters(), "lr": 1e-3}])
    apply_lr(optimizer, base_lrs=[5e-5, 1e-3], multiplier=0.5)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([2.5e-5, 5e-4])
    with pytest.raises(ValueError, match="base_lrs: got 1 learning rates for 2 param groups"):
        apply_lr(optimizer, base_lrs=[1e-3], multiplier=1.0)


# --- MixUp --------------------------------------------------------------------------------

def test_mixup_blends_features_and_labels_with_one_lambda():
    batch, targets = 8, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    features = torch.eye(batch)  # row i marks clip i, so the mix reveals lambda and the pairing
    mixed, soft, applied = mixup(features, targets, num_classes=3, alpha=0.4, p=1.0,
                                 generator=torch.Generator().manual_seed(0))
    assert applied and soft.shape == (batch, 3) and soft.dtype == torch.float32
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(batch))
    moved = [i for i in range(batch) if mixed[i, i] < 1]
    assert moved, "seed 0 pairs at least one clip with another"
    lam = mixed[moved[0], moved[0]].item()
    assert 0 < lam < 1
    pairs = torch.tensor([i if mixed[i, i] == 1 else
                          next(j for j in range(batch) if j != i and mixed[i, j] > 0) for i in range(batch)])
    torch.testing.assert_close(mixed, lam * features + (1 - lam) * features[pairs])
    one_hot = F.one_hot(targets, 3).float()
    torch.testing.assert_close(soft, lam * one_hot + (1 - lam) * one_hot[pairs])


def test_mixup_probability_and_disabling():
    features, targets = torch.randn(4, 2, 5, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 1, 0])
    generator = torch.Generator().manual_seed(2)
    for _ in range(20):
        mixed, soft, applied = mixup(features, targets, num_classes=2, alpha=0.4, p=0.0, generator=generator)
        assert not applied and torch.equal(mixed, features) and torch.equal(soft, F.one_hot(targets, 2).float())
    assert all(mixup(features, targets, num_classes=2, alpha=0.4, p=1.0, generator=generator)[2] for _ in range(20))
    assert not any(mixup(features, targets, num_classes=2, alpha=0.0, p=1.0, generator=generator)[2]
                   for _ in range(5))
    rate = np.mean([mixup(features, targets, num_classes=2, alpha=0.4, p=0.5, generator=generator)[2]
                    for _ in range(400)])
    assert 0.42 < rate < 0.58


def test_mixup_repeats_per_seed():
    features, targets = torch.randn(6, 3, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2] * 2)
    runs = [mixup(features, targets, num_classes=3, alpha=0.4, p=1.0, generator=torch.Generator().manual_seed(s))
            for s in (9, 9, 10)]
    torch.testing.assert_close(runs[0][0], runs[1][0])
    torch.testing.assert_close(runs[0][1], runs[1][1])
    assert not torch.allclose(runs[0][0], runs[2][0])
    with pytest.raises(ValueError, match=r"targets: class ids must lie in \[0, 2\)"):
        mixup(features, targets, num_classes=2, alpha=0.4, p=1.0, generator=torch.Generator())
