"""DeepSER: hierarchical transformer fusion of M >= 2 feature sequences.

The method: docs/method.md, section 4 (the paper's Algorithms 1-2).

Shapes: B batch, L_m frames of modality m, D_m its feature width, H hidden size, C classes
(MSP-Podcast's 8 by default; the config's class set).
Every sequence travels with a boolean mask `[B, L]` that is True on real frames: attention
ignores padded keys and pooling averages real frames only, so padding a batch changes nothing.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medusa.core.emotions import ATTRIBUTE_RANGE, ATTRIBUTES, NUM_CLASSES
from medusa.training.settings import ModelSettings


def ensure_nonempty(mask: torch.Tensor) -> torch.Tensor:
    """Mark the first frame valid in rows with no valid frame.

    A fully masked row would make attention softmax over nothing (NaN); its first (zero) frame
    stands in for the empty sequence instead.
    """
    empty = ~mask.any(dim=1)
    if not empty.any():
        return mask
    mask = mask.clone()
    mask[empty, 0] = True
    return mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the valid frames: `[B, L, H]`, `[B, L]` -> `[B, H]`."""
    weights = mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def pool_frames(x: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average every `k` consecutive valid frames: `[B, L, D]` -> `[B, ceil(L / k), D]`.

    Padded frames take no part (a window of padding only becomes padding), so pooling keeps
    a clip's output independent of how much the batch pads it.
    """
    if k == 1:
        return x, mask
    batch, length, dim = x.shape
    pad = (-length) % k
    weights = F.pad(mask.to(x.dtype), (0, pad))
    sums = F.pad(x * mask.unsqueeze(-1).to(x.dtype), (0, 0, 0, pad))
    sums = sums.view(batch, -1, k, dim).sum(dim=2)
    counts = weights.view(batch, -1, k).sum(dim=2)
    return sums / counts.clamp(min=1.0).unsqueeze(-1), counts > 0


class InputStandardiser(nn.Module):
    """`(x - mean) / std` per feature dimension, with statistics of the training features.

    Not in the paper (off by default: mean 0, std 1 is the identity). Backbone layers often
    carry a few dimensions of very large magnitude (Whisper's encoder does) that drown the
    others in the first projection; standardising makes every dimension start on one scale.
    The statistics are buffers, so checkpoints carry them to stage 2 and the posteriors.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        mean, std = torch.as_tensor(mean).float(), torch.as_tensor(std).float()
        if mean.shape != self.mean.shape or std.shape != self.std.shape:
            raise ValueError(
                f"statistics of shape {tuple(mean.shape)}/{tuple(std.shape)} for "
                f"{self.mean.shape[0]} features"
            )
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError("feature statistics must be finite with std > 0")
        self.mean.copy_(mean)
        self.std.copy_(std)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Padded frames stay exactly zero, whatever the statistics.
        return torch.where(mask.unsqueeze(-1), (x - self.mean) / self.std, 0.0)


class Encoder(nn.Module):
    """Algorithm 1 (ENC): per-frame projection, N transformer layers, masked mean pooling."""

    def __init__(
        self,
        input_dim: int,
        hidden_size: int,
        num_heads: int,
        ff_size: int,
        dropout: float,
        num_layers: int,
        attention_dropout: float | None = None,
    ):
        super().__init__()
        self.w1 = nn.Linear(input_dim, hidden_size)
        self.w2 = nn.Linear(hidden_size, hidden_size)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(hidden_size, num_heads, ff_size, dropout, batch_first=True)
            for _ in range(num_layers)
        )
        if attention_dropout is not None:
            # Dropout on the attention weights (PyTorch's default: `dropout`). On CPU it forces
            # the slow "math" attention kernel, several times slower than the fused one.
            for layer in self.layers:
                layer.self_attn.dropout = attention_dropout

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """`x [B, L, D]`, `mask [B, L]` -> (each layer's output `[B, L, H]`, pooled `[B, H]`)."""
        keep = mask.unsqueeze(-1)
        h = self.w2(F.relu(self.w1(x)))
        outputs = []
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=~mask)
            # Zero the padded positions: their values are meaningless, and a later fusion layer
            # multiplies them by zero attention weights (0 * NaN would still be NaN).
            h = torch.where(keep, h, 0.0)
            outputs.append(h)
        return outputs, masked_mean(h, mask)


class ManifoldMixUp(nn.Module):
    """Mix pooled representations and their targets between random pairs of the batch.

    With probability `p` per batch (training only): lambda ~ Beta(alpha, alpha) per sample,
    partner = a random permutation of the batch, and x, the class target and the attribute
    target are all mixed with the same lambda. NaN in a target (a missing attribute) stays NaN
    in every mix it enters, so the loss can skip it.
    """

    def __init__(self, p: float, alpha: float):
        super().__init__()
        if not 0.0 <= p <= 1.0 or alpha <= 0:
            raise ValueError(f"mixup needs 0 <= p <= 1 and alpha > 0, got p={p}, alpha={alpha}")
        self.p = p
        self.alpha = alpha

    def forward(
        self,
        x: torch.Tensor,
        y_class: torch.Tensor,
        y_attr: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.training or self.p == 0.0:
            return x, y_class, y_attr
        # All draws come from one CPU generator so that a seeded run repeats on any device.
        if torch.rand((), generator=generator).item() >= self.p:
            return x, y_class, y_attr
        batch = x.shape[0]
        perm = torch.randperm(batch, generator=generator).to(x.device)
        # torch's Beta sampler takes no generator: seed numpy's from the torch generator instead.
        seed = int(torch.randint(2**62, (), generator=generator).item())
        lam = np.random.default_rng(seed).beta(self.alpha, self.alpha, size=(batch, 1))
        lam = torch.as_tensor(lam, dtype=torch.float32, device=x.device)

        def mix(t: torch.Tensor) -> torch.Tensor:
            return lam.to(t.dtype) * t + (1.0 - lam.to(t.dtype)) * t[perm]

        return mix(x), mix(y_class), mix(y_attr)


class DeepSER(nn.Module):
    """Algorithm 2: unimodal encoders, hierarchical fusion encoders, MixUp, two heads.

    With N layers per encoder there are N fusion encoders: fusion encoder k reads the k-th
    layer outputs of every modality, joined along time, plus the previous fusion encoder's last
    layer output; the last fusion encoder contributes its pooled vector. With N = 2 this is the
    paper's f(1), f(2). `fusion="late"` (ablation) drops the fusion encoders.
    """

    def __init__(
        self,
        input_dims: list[int],
        hidden_size: int,
        num_heads: int,
        ff_size: int,
        dropout: float,
        encoder_layers: int,
        fusion: str = "deep",
        mixup_p: float = 0.0,
        mixup_alpha: float = 0.4,
        attention_dropout: float | None = None,
        frame_pooling: list[int] | None = None,
        num_classes: int = NUM_CLASSES,
    ):
        super().__init__()
        # Optional speed knob (not in the paper, off by default): average k consecutive frames
        # of a modality before its encoder; attention cost falls by about k^2.
        self.frame_pooling = list(frame_pooling or [1] * len(input_dims))
        if len(self.frame_pooling) != len(input_dims) or min(self.frame_pooling) < 1:
            raise ValueError(f"frame_pooling must give k >= 1 per modality: {frame_pooling}")
        if len(input_dims) < 2:
            raise ValueError(f"DeepSER fuses at least 2 modalities, got {len(input_dims)}")
        if fusion not in ("deep", "late"):
            raise ValueError(f"fusion must be 'deep' or 'late', got {fusion!r}")
        if encoder_layers < 1:
            raise ValueError(f"encoder_layers must be >= 1, got {encoder_layers}")

        def encoder(dim: int) -> Encoder:
            return Encoder(
                dim, hidden_size, num_heads, ff_size, dropout, encoder_layers, attention_dropout
            )

        self.standardisers = nn.ModuleList(InputStandardiser(d) for d in input_dims)
        self.encoders = nn.ModuleList(encoder(d) for d in input_dims)
        self.fusion = (
            nn.ModuleList(encoder(hidden_size) for _ in range(encoder_layers))
            if fusion == "deep"
            else None
        )
        n_pooled = len(input_dims) + (1 if self.fusion is not None else 0)
        self.merge = nn.Linear(n_pooled * hidden_size, hidden_size)  # W
        self.mixup = ManifoldMixUp(mixup_p, mixup_alpha)
        self.classifier = nn.Linear(hidden_size, num_classes)  # W_c
        self.regressor = nn.Linear(hidden_size, len(ATTRIBUTES))  # W_r

    def embed(self, features: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
        """The fused representation x `[B, H]` before MixUp and the heads."""
        if len(features) != len(self.encoders) or len(masks) != len(self.encoders):
            raise ValueError(
                f"model has {len(self.encoders)} modalities, got {len(features)} feature "
                f"tensors and {len(masks)} masks"
            )
        pooled_inputs = [
            pool_frames(standardise(x, m), m, k)
            for standardise, x, m, k in zip(
                self.standardisers, features, masks, self.frame_pooling, strict=True
            )
        ]
        features = [x for x, _ in pooled_inputs]
        masks = [ensure_nonempty(m) for _, m in pooled_inputs]
        layers, pooled = [], []
        for enc, x, mask in zip(self.encoders, features, masks, strict=True):
            outputs, vector = enc(x, mask)
            layers.append(outputs)
            pooled.append(vector)

        if self.fusion is not None:
            previous, previous_mask = [], []
            for k, fuse in enumerate(self.fusion):
                tokens = torch.cat([out[k] for out in layers] + previous, dim=1)
                token_mask = torch.cat(masks + previous_mask, dim=1)
                outputs, vector = fuse(tokens, token_mask)
                previous, previous_mask = [outputs[-1]], [token_mask]
            pooled.append(vector)  # the last fusion encoder's pooled output

        return self.merge(torch.cat(pooled, dim=-1))

    def set_input_statistics(self, statistics: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Per modality `(mean [D_m], std [D_m])` of the training features (see InputStandardiser)."""
        if len(statistics) != len(self.standardisers):
            raise ValueError(
                f"model has {len(self.standardisers)} modalities, got {len(statistics)} statistics"
            )
        for standardiser, (mean, std) in zip(self.standardisers, statistics, strict=True):
            standardiser.set_statistics(mean, std)

    def forward(
        self,
        features: list[torch.Tensor],
        masks: list[torch.Tensor],
        y_class: torch.Tensor | None = None,
        y_attr: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """-> (class logits `[B, 8]`, attributes in [1, 7] `[B, 3]`, mixed y_class, mixed y_attr).

        Targets are only needed in training (MixUp mixes them with x); pass None to predict.
        """
        x = self.embed(features, masks)
        if y_class is not None and y_attr is not None:
            x, y_class, y_attr = self.mixup(x, y_class, y_attr, generator)
        logits = self.classifier(F.relu(x))
        low, high = ATTRIBUTE_RANGE
        attrs = low + (high - low) * torch.sigmoid(self.regressor(F.relu(x)))
        return logits, attrs, y_class, y_attr


def build_model(
    settings: ModelSettings,
    input_dims: list[int],
    frame_pooling: list[int],
    num_classes: int = NUM_CLASSES,
) -> DeepSER:
    """A DeepSER from a model's settings, for features of widths `input_dims` and
    `num_classes` classes (the run's class set).

    `frame_pooling` gives one k per modality: training derives it from the setting
    `frame_pooling` and the feature sets' frame rates (text is never pooled), checkpoints keep it.
    """
    mixup = settings.mixup
    return DeepSER(
        input_dims=list(input_dims),
        hidden_size=settings.hidden_size,
        num_heads=settings.num_heads,
        ff_size=settings.ff_size,
        dropout=settings.dropout,
        encoder_layers=settings.encoder_layers,
        fusion=settings.fusion,
        mixup_p=mixup.p if mixup.enabled else 0.0,
        mixup_alpha=mixup.alpha,
        attention_dropout=settings.attention_dropout,
        frame_pooling=list(frame_pooling),
        num_classes=num_classes,
    )


def soft_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Batch mean of `-sum_c w_c t_c log_softmax(logits)_c` (soft or one-hot targets)."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    weighted = targets * log_probs if class_weights is None else class_weights * targets * log_probs
    return -weighted.sum(dim=-1).mean()


def masked_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the finite target entries (NaN = attribute not rated)."""
    valid = torch.isfinite(target)
    squared = torch.where(valid, (prediction.float() - target.nan_to_num()) ** 2, 0.0)
    return squared.sum() / valid.sum().clamp(min=1)


def class_weights_from_targets(soft_targets: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Stage-1 class weights `w_c = (N / (C * f_c)) ** 0.5`, f_c the class mass of the targets.

    N is the number of files (the total mass, as each target sums to 1). A class with no mass
    gets weight 0: no target asks for it, so its weight would only multiply zeros.
    """
    targets = torch.as_tensor(np.asarray(soft_targets), dtype=torch.float64)
    if targets.ndim != 2 or targets.shape[1] < 2:
        raise ValueError(f"soft targets must be [N, C >= 2], got {tuple(targets.shape)}")
    n, n_classes = targets.shape
    mass = targets.sum(dim=0)
    weights = torch.zeros(n_classes, dtype=torch.float64)
    present = mass > 0
    weights[present] = (n / (n_classes * mass[present])) ** 0.5
    return weights.float()


def total_loss(
    logits: torch.Tensor,
    attrs: torch.Tensor,
    y_class: torch.Tensor,
    y_attr: torch.Tensor,
    class_weights: torch.Tensor | None,
    class_weight: float,
    attribute_weight: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Equation (1): `lambda_1 * CE + lambda_2 * MSE` -> (total, CE, MSE)."""
    ce = soft_cross_entropy(logits, y_class, class_weights)
    mse = masked_mse(attrs, y_attr)
    return class_weight * ce + attribute_weight * mse, ce, mse
