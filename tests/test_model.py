"""DeepSER (docs/method.md, section 4): shapes, padding invariance, MixUp, losses, late-fusion switch."""

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from medusa.training.model import (
    DeepSER,
    InputStandardiser,
    ManifoldMixUp,
    build_model,
    class_weights_from_targets,
    masked_mse,
    soft_cross_entropy,
    total_loss,
)
from medusa.training.settings import ModelSettings, SettingsError

torch.set_num_threads(1)


def tiny(input_dims, fusion="deep", layers=2, **kw):
    torch.manual_seed(0)
    return DeepSER(input_dims, 16, 2, 32, 0.1, layers, fusion, **kw)


def batch(input_dims, lengths):
    """Random features for clips with the given per-modality lengths (padded, with masks)."""
    features, masks = [], []
    for m, dim in enumerate(input_dims):
        clip_lengths = [clip[m] for clip in lengths]
        longest = max(clip_lengths)
        x = torch.randn(len(lengths), longest, dim)
        mask = torch.arange(longest)[None, :] < torch.tensor(clip_lengths)[:, None]
        features.append(x * mask[..., None])
        masks.append(mask)
    return features, masks


@pytest.mark.parametrize("input_dims", [[7, 5], [7, 5, 3]])
@pytest.mark.parametrize("fusion", ["deep", "late"])
def test_output_shapes_and_ranges(input_dims, fusion):
    model = tiny(input_dims, fusion).eval()
    lengths = [tuple(2 + i + m for m in range(len(input_dims))) for i in range(4)]
    features, masks = batch(input_dims, lengths)
    logits, attrs, y_class, y_attr = model(features, masks)
    assert logits.shape == (4, 8)
    assert attrs.shape == (4, 3)
    assert y_class is None and y_attr is None
    assert ((attrs > 1) & (attrs < 7)).all()
    assert model.embed(features, masks).shape == (4, 16)


def test_fusion_encoders_follow_layer_count_and_late_fusion_removes_them():
    deep = tiny([7, 5, 3], "deep", layers=3)
    assert len(deep.fusion) == 3
    assert deep.merge.in_features == 4 * 16  # 3 pooled unimodal vectors + the fusion vector
    late = tiny([7, 5, 3], "late", layers=3)
    assert late.fusion is None
    assert not any(name.startswith("fusion") for name, _ in late.named_parameters())
    assert late.merge.in_features == 3 * 16
    assert sum(p.numel() for p in late.parameters()) < sum(p.numel() for p in deep.parameters())


@pytest.mark.parametrize("input_dims", [[7, 5], [7, 5, 3]])
def test_padding_does_not_change_outputs(input_dims):
    model = tiny(input_dims).eval()
    torch.manual_seed(1)
    # With input statistics set too: standardised padding must stay out of every result.
    model.set_input_statistics([(torch.randn(d), 0.5 + torch.rand(d)) for d in input_dims])
    lengths = [
        (3, 2, 4)[: len(input_dims)],
        (9, 1, 6)[: len(input_dims)],
        (5, 7, 2)[: len(input_dims)],
    ]
    features, masks = batch(input_dims, lengths)
    with torch.no_grad():
        together = model(features, masks)[:2]
        for i, clip in enumerate(lengths):
            alone = model(
                [f[i : i + 1, : clip[m]] for m, f in enumerate(features)],
                [k[i : i + 1, : clip[m]] for m, k in enumerate(masks)],
            )[:2]
            torch.testing.assert_close(alone[0], together[0][i : i + 1], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(alone[1], together[1][i : i + 1], atol=1e-5, rtol=1e-5)
        # Garbage in the padded positions must not matter either.
        noisy = [
            torch.where(k[..., None], f, 1e3 * torch.randn_like(f))
            for f, k in zip(features, masks, strict=True)
        ]
        torch.testing.assert_close(model(noisy, masks)[0], together[0], atol=1e-5, rtol=1e-5)


def test_input_standardiser_applies_statistics_and_keeps_padding_zero():
    standardise = InputStandardiser(3)
    x = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]])
    mask = torch.tensor([[True, False]])
    # The default statistics are the identity (the paper's model).
    torch.testing.assert_close(standardise(x, mask), torch.tensor([[[1.0, 2.0, 3.0], [0, 0, 0]]]))
    standardise.set_statistics(torch.tensor([1.0, 0.0, -1.0]), torch.tensor([2.0, 1.0, 4.0]))
    torch.testing.assert_close(
        standardise(x, mask), torch.tensor([[[0.0, 2.0, 1.0], [0.0, 0.0, 0.0]]])
    )
    with pytest.raises(ValueError, match="std > 0"):
        standardise.set_statistics(torch.zeros(3), torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="for 3 features"):
        standardise.set_statistics(torch.zeros(2), torch.ones(2))


def test_standardised_model_ignores_the_scale_and_offset_of_its_inputs():
    """Features x with their statistics and a*x + b with theirs give the same predictions."""
    model = tiny([7, 5]).eval()
    features, masks = batch([7, 5], [(4, 3), (6, 2), (2, 5)])
    scale, offset = torch.rand(7) * 100 + 1, torch.randn(7) * 50
    moved = [features[0] * scale + offset, features[1]]

    def stats(f, k):
        frames = f[k]
        return frames.mean(dim=0), frames.std(dim=0)

    with torch.no_grad():
        model.set_input_statistics([stats(f, k) for f, k in zip(features, masks, strict=True)])
        expected = model(features, masks)[0]
        model.set_input_statistics([stats(f, k) for f, k in zip(moved, masks, strict=True)])
        torch.testing.assert_close(model(moved, masks)[0], expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="2 modalities, got 1"):
        model.set_input_statistics([stats(features[0], masks[0])])


def test_empty_sequence_gives_finite_outputs_and_gradients():
    model = tiny([7, 5]).train()
    features, masks = batch([7, 5], [(4, 3), (2, 3)])
    masks[1][0] = False  # clip 0 has no frames in modality 2 (e.g. an empty transcript)
    features[1][0] = 0.0
    logits, attrs, _, _ = model(features, masks)
    assert torch.isfinite(logits).all() and torch.isfinite(attrs).all()
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_mixup_mixes_features_and_both_targets_with_one_lambda():
    batch_size = 12
    mixup = ManifoldMixUp(p=1.0, alpha=0.4).train()
    x = torch.eye(batch_size)  # row i is e_i: the mix reveals lambda_i and the partner
    y_class = torch.softmax(torch.randn(batch_size, 8), dim=-1)
    y_attr = 1 + 6 * torch.rand(batch_size, 3)
    generator = torch.Generator().manual_seed(3)
    mx, my, ma = mixup(x, y_class, y_attr, generator)
    lambdas = []
    for i in range(batch_size):
        partner = int(torch.argmax(torch.where(torch.arange(batch_size) == i, -1.0, mx[i])))
        lam = float(mx[i, i])
        if mx[i, partner] == 0:  # paired with itself: unchanged
            partner, lam = i, 1.0
        expected_x = lam * x[i] + (1 - lam) * x[partner]
        torch.testing.assert_close(mx[i], expected_x)
        torch.testing.assert_close(my[i], lam * y_class[i] + (1 - lam) * y_class[partner])
        torch.testing.assert_close(ma[i], lam * y_attr[i] + (1 - lam) * y_attr[partner])
        lambdas.append(lam)
    assert len({round(v, 6) for v in lambdas}) > batch_size // 2  # one lambda per sample
    torch.testing.assert_close(my.sum(dim=1), torch.ones(batch_size))

    # The same generator seed repeats the same mix.
    again = mixup(x, y_class, y_attr, torch.Generator().manual_seed(3))
    torch.testing.assert_close(again[0], mx)

    # Off in eval mode, and with p = 0.
    mixup.eval()
    assert mixup(x, y_class, y_attr, generator)[0] is x
    off = ManifoldMixUp(p=0.0, alpha=0.4).train()
    assert off(x, y_class, y_attr, generator)[0] is x


def test_mixup_probability_per_batch():
    mixup = ManifoldMixUp(p=0.3, alpha=0.4).train()
    generator = torch.Generator().manual_seed(0)
    x = torch.eye(4)
    mixed = sum(not torch.equal(mixup(x, x, x, generator)[0], x) for _ in range(400))
    assert 0.22 < mixed / 400 < 0.38


def test_mixup_inside_model_only_in_training():
    model = tiny([7, 5], mixup_p=1.0, mixup_alpha=0.4)
    features, masks = batch([7, 5], [(4, 3), (2, 3), (5, 1)])
    y_class = torch.eye(8)[:3]
    y_attr = torch.full((3, 3), 4.0)
    model.eval()
    _, _, yc, ya = model(features, masks, y_class, y_attr, torch.Generator().manual_seed(0))
    assert torch.equal(yc, y_class) and torch.equal(ya, y_attr)
    model.train()
    _, _, yc, _ = model(features, masks, y_class, y_attr, torch.Generator().manual_seed(0))
    assert not torch.equal(yc, y_class)


def test_soft_cross_entropy_equals_standard_ce_for_one_hot():
    torch.manual_seed(0)
    logits = torch.randn(6, 8)
    labels = torch.tensor([0, 3, 7, 2, 2, 5])
    onehot = F.one_hot(labels, 8).float()
    torch.testing.assert_close(soft_cross_entropy(logits, onehot), F.cross_entropy(logits, labels))
    weights = torch.rand(8) + 0.5
    torch.testing.assert_close(
        soft_cross_entropy(logits, onehot, weights),
        F.cross_entropy(logits, labels, weight=weights, reduction="none").mean(),
    )
    # Soft targets: the expectation of the one-hot losses under the target distribution.
    soft = torch.softmax(torch.randn(6, 8), dim=-1)
    expected = -(soft * F.log_softmax(logits, dim=-1)).sum(dim=1).mean()
    torch.testing.assert_close(soft_cross_entropy(logits, soft), expected)


def test_class_weights_match_formula():
    targets = torch.tensor(
        [
            [1.0, 0, 0, 0, 0, 0, 0, 0],
            [0.5, 0.5, 0, 0, 0, 0, 0, 0],
            [0, 1.0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0.75, 0, 0, 0, 0, 0.25],
        ]
    )
    weights = class_weights_from_targets(targets)
    n, c = 4, 8
    mass = [1.5, 1.5, 0.75, 0, 0, 0, 0, 0.25]
    expected = [math.sqrt(n / (c * f)) if f > 0 else 0.0 for f in mass]
    torch.testing.assert_close(weights, torch.tensor(expected))
    # Any class set of 2 or more classes: the formula uses its own C.
    six = class_weights_from_targets(torch.eye(6)[[0, 0, 1, 5]])
    torch.testing.assert_close(six[0], torch.tensor(math.sqrt(4 / (6 * 2.0))))
    assert six[2:5].eq(0).all()
    for bad in (torch.ones(3, 1), torch.ones(5)):
        with pytest.raises(ValueError, match="soft targets"):
            class_weights_from_targets(bad)


def test_masked_mse_and_total_loss():
    prediction = torch.tensor([[2.0, 3.0, 4.0], [1.0, 1.0, 1.0]])
    target = torch.tensor([[3.0, float("nan"), 4.0], [float("nan")] * 3])
    torch.testing.assert_close(masked_mse(prediction, target), torch.tensor(0.5))
    assert masked_mse(prediction, torch.full((2, 3), float("nan"))) == 0
    logits = torch.randn(2, 8)
    y = torch.eye(8)[:2]
    loss, ce, mse = total_loss(logits, prediction, y, target, None, 1.5, 0.4)
    torch.testing.assert_close(loss, 1.5 * ce + 0.4 * mse)
    no_multitask, _, _ = total_loss(logits, prediction, y, target, None, 1.5, 0.0)
    torch.testing.assert_close(no_multitask, 1.5 * ce)


def model_settings(**overrides) -> ModelSettings:
    params = {
        "name": "m",
        "features": ["a", "b"],
        "hidden_size": 8,
        "num_heads": 2,
        "ff_size": 16,
        "dropout": 0.0,
        "attention_dropout": None,
        "encoder_layers": 1,
        "fusion": "late",
        "targets": "soft",
        "multitask": True,
        "loss_weights": {"classes": 1.5, "attributes": 0.4},
        "mixup": {"enabled": False, "p": 0.3, "alpha": 0.4},
        "stage1": {"lr": 1e-3, "batch_size": 4, "max_epochs": 1, "patience": 1, "weight_decay": 0},
        "stage2": {
            "enabled": True,
            "lr": 1e-4,
            "batch_size": 4,
            "max_epochs": 1,
            "patience": 1,
            "weight_decay": 0,
        },
        "max_frames": 10,
        "num_workers": 0,
        "amp": True,
        "frame_pooling": 1,
        "standardise_inputs": False,
        "seed": 0,
    }
    return ModelSettings.from_params({**params, **overrides})


def test_build_model_from_config():
    cfg = model_settings()
    model = build_model(cfg, [4, 6], [1, 1])
    assert model.fusion is None and model.mixup.p == 0.0
    assert len(model.encoders) == 2 and len(model.encoders[0].layers) == 1
    assert model.encoders[0].layers[0].self_attn.dropout == 0.0
    # attention_dropout: only the attention weights' dropout changes (CPU speed, see model.py).
    cfg = dataclasses.replace(cfg, dropout=0.1, fusion="deep")
    assert build_model(cfg, [4, 6], [1, 1]).fusion[0].layers[0].self_attn.dropout == 0.1
    fast = build_model(dataclasses.replace(cfg, attention_dropout=0.0), [4, 6], [1, 1])
    layers = [layer for enc in [*fast.encoders, *fast.fusion] for layer in enc.layers]
    assert all(layer.self_attn.dropout == 0.0 and layer.dropout.p == 0.1 for layer in layers)
    with pytest.raises(ValueError, match="at least 2 modalities"):
        build_model(cfg, [4], [1])
    with pytest.raises(ValueError, match="fusion"):
        build_model(dataclasses.replace(cfg, fusion="early"), [4, 6], [1, 1])


def test_settings_name_missing_unknown_and_mistyped_keys():
    params = model_settings().to_params()
    assert ModelSettings.from_params(params) == model_settings()
    assert ModelSettings.from_params(json.dumps(params)) == model_settings()
    del params["stage1"]["lr"]
    with pytest.raises(SettingsError, match=r"stage1: missing key\(s\) \['lr'\]"):
        ModelSettings.from_params(params)
    with pytest.raises(SettingsError, match=r"unknown key\(s\) \['colour'\]"):
        model_settings(colour="blue")
    with pytest.raises(SettingsError, match="hidden_size: 'big'"):
        model_settings(hidden_size="big")
    with pytest.raises(SettingsError, match="amp: 1"):
        model_settings(amp=1)
    assert (
        model_settings(dropout=0).dropout == 0.0
        and model_settings(multitask=False).attribute_weight == 0.0
    )


def test_frame_pooling_averages_valid_frames_and_ignores_padding():
    from medusa.training.model import pool_frames

    x = torch.arange(2 * 6 * 1, dtype=torch.float32).view(2, 6, 1)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    pooled, pooled_mask = pool_frames(x, mask, 4)
    assert pooled.shape == (2, 2, 1)
    assert pooled[0, :, 0].tolist() == [1.5, 4.5]  # (0+1+2+3)/4, (4+5)/2
    assert pooled[1, 0, 0].item() == 7.0  # (6+7+8)/3: the padded frame takes no part
    assert pooled_mask.tolist() == [[True, True], [True, False]]


def test_frame_pooling_keeps_outputs_independent_of_batch_padding():
    torch.manual_seed(0)
    model = DeepSER([6, 5], 16, 2, 32, 0.0, 2, frame_pooling=[3, 1]).eval()
    a, b = torch.randn(1, 10, 6), torch.randn(1, 7, 5)
    alone = model(
        [a, b], [torch.ones(1, 10, dtype=torch.bool), torch.ones(1, 7, dtype=torch.bool)]
    )[0]
    padded = model(
        [torch.cat([a, torch.zeros(1, 5, 6)], 1), torch.cat([b, torch.zeros(1, 4, 5)], 1)],
        [
            torch.tensor([[True] * 10 + [False] * 5]),
            torch.tensor([[True] * 7 + [False] * 4]),
        ],
    )[0]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Algorithm 2, written out step by step from the paper and compared with the model. Each step
# that is wired differently in the model (a fusion encoder fed another layer's tokens, f2(1)
# missing from fusion 2, the fused pooled vector not reaching W, no ReLU before the heads)
# makes the outputs differ.


def algorithm2(model: DeepSER, features, masks):
    """(logits, attributes) of a 2-layer deep-fusion DeepSER, as the paper writes it."""
    layer1, layer2, pooled = [], [], []
    for encoder, x, mask in zip(model.encoders, features, masks, strict=True):
        (h1, h2), p = encoder(x, mask)  # ENC_m: both layers' outputs and the pooled vector
        layer1.append(h1)
        layer2.append(h2)
        pooled.append(p)
    joint_mask = torch.cat(masks, dim=1)
    # f(1): the first fusion encoder over every modality's first-layer tokens, joined in time;
    # f2(1) is its (second, last) layer's output.
    (_, f2_1), _ = model.fusion[0](torch.cat(layer1, dim=1), joint_mask)
    # f(2): the second over every modality's second-layer tokens plus f2(1).
    tokens2 = torch.cat([*layer2, f2_1], dim=1)
    _, f2_pooled = model.fusion[1](tokens2, torch.cat([joint_mask, joint_mask], dim=1))
    # x = W [pool(e_1); ...; pool(e_M); pool(f(2))], then ReLU and the two heads.
    x = model.merge(torch.cat([*pooled, f2_pooled], dim=-1))
    hidden = torch.relu(x)
    attributes = 1.0 + 6.0 * torch.sigmoid(model.regressor(hidden))
    return model.classifier(hidden), attributes


@pytest.mark.parametrize("input_dims", [[7, 5], [7, 5, 3]])
def test_deepser_is_algorithm_2(input_dims):
    model = tiny(input_dims, layers=2).eval()
    lengths = [[6, 4, 5][: len(input_dims)], [3, 7, 2][: len(input_dims)]]
    features, masks = batch(input_dims, lengths)
    with torch.no_grad():
        logits, attributes, _, _ = model(features, masks)
        want_logits, want_attributes = algorithm2(model, features, masks)
        # The check has teeth only if the ReLU clips something.
        assert (model.embed(features, masks) < 0).any()
    torch.testing.assert_close(logits, want_logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(attributes, want_attributes, rtol=1e-5, atol=1e-6)
