"""Typed settings of one DeepSER model, built once from a job's params.

config/config.yaml is the only source of values: every field below is a key there (under
`model_defaults` or a model's own entry; `name` and `features` come from the model), the schema
(workflow/schemas/config.schema.yaml) checks its type and marks it required, and nothing here
has a default. `from_params` takes what the workflow passes a job (`common.smk: model_params`,
canonical JSON) or the dict a checkpoint stores, and names any missing or unknown key.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass


class SettingsError(ValueError):
    """Params that do not fit the settings; the message names the key."""


@dataclass(frozen=True)
class StageSettings:
    """One training stage's optimiser and schedule (`stage1`, docs/method.md 5.1)."""

    lr: float
    batch_size: int
    max_epochs: int
    patience: int
    weight_decay: float


@dataclass(frozen=True)
class Stage2Settings(StageSettings):
    """Stage 2 (docs/method.md 5.2); `enabled: false` is read by the workflow, not training:
    the posteriors then come from the stage-1 checkpoint and stage 2 never runs."""

    enabled: bool


@dataclass(frozen=True)
class MixupSettings:
    """Manifold MixUp (docs/method.md 4.4)."""

    enabled: bool
    p: float
    alpha: float


@dataclass(frozen=True)
class LossWeights:
    """lambda_1 (class CE) and lambda_2 (attribute MSE) of the loss (docs/method.md 4.5)."""

    classes: float
    attributes: float


@dataclass(frozen=True)
class ModelSettings:
    """A model's resolved settings: model_defaults with the model's own entry on top."""

    name: str
    features: tuple[str, ...]
    hidden_size: int
    num_heads: int
    ff_size: int
    dropout: float
    attention_dropout: float | None
    encoder_layers: int
    fusion: str
    targets: str
    multitask: bool
    loss_weights: LossWeights
    mixup: MixupSettings
    stage1: StageSettings
    stage2: Stage2Settings
    max_frames: int
    num_workers: int
    amp: bool
    frame_pooling: int
    standardise_inputs: bool
    seed: int

    @classmethod
    def from_params(cls, params: str | Mapping) -> ModelSettings:
        """From canonical JSON or a dict with exactly these keys (nested ones as dicts)."""
        if isinstance(params, str):
            params = json.loads(params)
        return _build(cls, params, "model settings")

    def to_params(self) -> dict:
        """The plain dict `from_params` reads back (stored in checkpoints, `weights_only`-safe)."""
        params = dataclasses.asdict(self)
        params["features"] = list(self.features)
        return params

    @property
    def attribute_weight(self) -> float:
        """lambda_2 in force: `multitask: false` (ablation) trains without the attribute loss."""
        return self.loss_weights.attributes if self.multitask else 0.0


def _build(cls, params: Mapping, where: str):
    """`cls(**params)` with nested dataclasses built from dicts and scalar types checked."""
    if not isinstance(params, Mapping):
        raise SettingsError(f"{where}: expected a mapping, got {params!r}")
    fields = typing.get_type_hints(cls)
    missing = [name for name in fields if name not in params]
    unknown = [name for name in params if name not in fields]
    if missing or unknown:
        raise SettingsError(f"{where}: missing key(s) {missing}, unknown key(s) {unknown}")
    return cls(
        **{name: _value(kind, params[name], f"{where}.{name}") for name, kind in fields.items()}
    )


def _value(kind, value, where: str):
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, where)
    if kind == tuple[str, ...]:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"{where}: expected a list of names, got {value!r}")
        return tuple(value)
    if kind == float | None and value is None:
        return None
    number = kind in (float, float | None)
    expected = (int, float) if number else kind
    # bool is an int to Python, but never a number or a count here.
    if not isinstance(value, expected) or (isinstance(value, bool) and kind is not bool):
        raise SettingsError(f"{where}: {value!r} is not of type {getattr(kind, '__name__', kind)}")
    return float(value) if number else value
