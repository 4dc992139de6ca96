"""Workflow configuration: schema validation with defaults, cross-references, per-job sub-configs.

The Snakefile calls `validate_config` at parse time. Errors name the offending key
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


def _with_defaults(validator_class):
    """A validator that fills `default`s of absent properties while validating."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultFillingValidator = _with_defaults(jsonschema.Draft202012Validator)


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
    """Validate `config` in place against the schema, fill defaults, check cross-references.

    Raises ConfigError listing every problem, each naming its key.
    """
    schema = load_schema(schema_path)
    validator = _DefaultFillingValidator(schema)
    # Defaults of objects that were themselves just defaulted are filled on the next pass.
    for _ in range(3):
        errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
        if errors:
            raise ConfigError(
                "invalid configuration:\n  " + "\n  ".join(_describe(e) for e in errors)
            )
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
    if config["model_defaults"].get("enabled") is not None:
        problems.append("model_defaults.enabled: set `enabled` on individual models only")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return config


def enabled_models(config: dict) -> list[str]:
    """Models in the DAG, in config order (the ensemble's input order)."""
    return [name for name, model in config["models"].items() if model.get("enabled", True)]


def deep_merge(base: dict, override: dict) -> dict:
    """`override` on top of `base`, recursing into nested dicts (neither input is modified)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def model_config(config: dict, model: str) -> dict:
    """A model's resolved settings: model_defaults with the model's own entry on top."""
    resolved = deep_merge(config["model_defaults"], config["models"][model])
    resolved.pop("enabled", None)  # only decides whether the model is in the DAG
    resolved["name"] = model
    return resolved


def canonical_json(value) -> str:
    """Key-order-independent JSON, so reordering YAML keys never triggers a rerun."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
