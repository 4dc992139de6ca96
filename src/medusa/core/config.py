"""Workflow configuration: schema validation, cross-references, per-job sub-configs.

config/config.yaml is the only source of values (every key the code reads is there, with a
comment); the schema checks types, enums and ranges and marks keys required, and fills nothing
in. The Snakefile calls `validate_config` at parse time. Errors name the offending key
(`models.m01.hidden_size: 'big' is not of type 'integer'`) so a user can fix the file directly.
`model_config` / `canonical_json` give every job only its own sub-config, in canonical form, so a
change to one model's settings reruns only that model's jobs.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import yaml


class ConfigError(ValueError):
    """The workflow configuration is invalid; the message names the key."""


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    where = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        names = ", ".join(f"{where}.{e}" if error.absolute_path else e for e in extra)
        return f"unknown key {names} (allowed here: {', '.join(allowed)})"
    if error.validator == "oneOf" and error.schema.get("description"):
        return f"{where}: {error.instance!r} is not valid: expected {error.schema['description']}"
    return f"{where}: {error.message}"


def load_schema(schema_path: str | Path) -> dict:
    with open(schema_path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def validate_config(config: dict, schema_path: str | Path) -> dict:
    """Validate `config` against the schema and check cross-references; returns `config`.

    Raises ConfigError listing every problem, each naming its key.
    """
    validator = jsonschema.Draft202012Validator(load_schema(schema_path))
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(_describe(e) for e in errors))
    problems = []
    feature_sets = config["feature_sets"]
    for name, model in config["models"].items():
        for feature_set in model["features"]:
            if feature_set not in feature_sets:
                problems.append(
                    f"models.{name}.features: unknown feature set {feature_set!r} "
                    f"(defined under feature_sets: {', '.join(feature_sets)})"
                )
        if len(set(model["features"])) != len(model["features"]):
            problems.append(f"models.{name}.features: a feature set is listed twice")
    if not enabled_models(config):
        problems.append("models: every model has enabled: false; the ensemble needs at least one")
    for model in config["ablations"]["models"]:
        if model not in config["models"]:
            problems.append(f"ablations.models: unknown model {model!r}")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return config


def enabled_models(config: dict) -> list[str]:
    """Models in the DAG, in config order (the ensemble's input order)."""
    return [name for name in config["models"] if resolved_model(config, name)["enabled"]]


def deep_merge(base: dict, override: dict) -> dict:
    """`override` on top of `base`, recursing into nested dicts (neither input is modified)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# Table 2's models are named `<model>__no_<switch>`: the model with one ablation switch on top.
ABLATION_SEPARATOR = "__no_"


def ablation_variants(config: dict) -> dict[str, tuple[str, str]]:
    """Every ablation model of Table 2: name -> (the model it ablates, the switch)."""
    ablations = config["ablations"]
    return {
        f"{model}{ABLATION_SEPARATOR}{switch}": (model, switch)
        for model in ablations["models"]
        for switch in ablations["switches"]
    }


def resolved_model(config: dict, model: str) -> dict:
    """model_defaults with the model's own entry on top (`enabled` included); for an ablation
    model, the ablated model's settings with the switch on top."""
    if ABLATION_SEPARATOR in model:
        base, switch = model.split(ABLATION_SEPARATOR)
        return deep_merge(resolved_model(config, base), config["ablations"]["switches"][switch])
    return deep_merge(config["model_defaults"], config["models"][model])


def model_config(config: dict, model: str) -> dict:
    """A model's resolved settings: model_defaults with the model's own entry on top."""
    resolved = resolved_model(config, model)
    resolved.pop("enabled")  # only decides whether the model is in the DAG
    resolved["name"] = model
    return resolved


def model_job_params(config: dict, model: str) -> dict:
    """What a model's training and posterior jobs get (as canonical JSON): its resolved
    settings; medusa.training.settings.ModelSettings."""
    return model_config(config, model)


def stage2_enabled(config: dict, model: str) -> bool:
    """False (the paper's Table 2 ablation): the model's posteriors come from stage 1."""
    return resolved_model(config, model)["stage2"]["enabled"]


def canonical_json(value) -> str:
    """Key-order-independent JSON, so reordering YAML keys never triggers a rerun."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
