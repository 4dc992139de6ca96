"""Config validation: schema errors name the key, config/config.yaml holds every value (the
schema fills nothing in), sub-configs are canonical, stage2.enabled is decided in the DAG."""

import copy
import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from medusa.core.config import (
    ConfigError,
    canonical_json,
    deep_merge,
    enabled_models,
    model_config,
    model_job_params,
    validate_config,
)
from medusa.training.settings import ModelSettings

from workflow_runner import CI_CONFIGS, generate_demo_corpus, run_snakemake

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


@pytest.fixture
def recipe():
    return yaml.safe_load((ROOT / "config/config.yaml").read_text())


def test_recipe_is_valid_and_has_the_paper_setup(recipe):
    config = validate_config(recipe, SCHEMA)
    assert len(config["models"]) == 14
    assert config["meta"]["seeds"] == [0, 1, 2, 3, 4, 5]
    backbones = {fs["backbone"] for fs in config["feature_sets"].values()}
    assert backbones == {
        "microsoft/wavlm-large",
        "facebook/hubert-large-ls960-ft",
        "openai/whisper-large-v3",
        "FacebookAI/roberta-large",
        "answerdotai/ModernBERT-large",
    }
    assert config["asr"]["model"] == "large-v3"
    defaults = config["model_defaults"]
    assert defaults["hidden_size"] == 1024
    assert defaults["stage1"]["lr"] == 1e-5 and defaults["stage1"]["batch_size"] == 16
    assert defaults["mixup"]["p"] == 0.3
    assert defaults["loss_weights"] == {"classes": 1.5, "attributes": 0.4}
    assert config["meta"]["init"] == "votes" and config["meta"]["train_on"] == "meta"
    assert 0 < config["data"]["meta_fraction"] < 1


def test_missing_keys_are_errors_not_defaults(recipe):
    """Nothing is filled in: a key left out of the recipe is an error naming it."""
    del recipe["meta"]
    del recipe["model_defaults"]["stage2"]["lr"]
    del recipe["feature_sets"]["wavlm"]["batch_size"]
    with pytest.raises(ConfigError) as error:
        validate_config(recipe, SCHEMA)
    message = str(error.value)
    assert "'meta' is a required property" in message
    assert "model_defaults.stage2: 'lr' is a required property" in message
    assert "feature_sets.wavlm: 'batch_size' is a required property" in message
    schema = yaml.safe_load(SCHEMA.read_text())
    assert set(schema["required"]) == set(schema["properties"]) - {"demo", "demo_table"}

    def defaults(node, where="schema"):
        if isinstance(node, dict):
            if "default" in node:
                yield where
            for key, value in node.items():
                yield from defaults(value, f"{where}.{key}")
        elif isinstance(node, list):
            for value in node:
                yield from defaults(value, where)

    assert list(defaults(schema)) == [], "the schema fills nothing in"


def settings_fields(cls, prefix=""):
    """Dotted names of every field of a settings dataclass, nested ones included."""
    for name, kind in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(kind):
            yield from settings_fields(kind, f"{prefix}{name}.")
        else:
            yield prefix + name


def test_recipe_and_schema_cover_every_model_setting(recipe):
    """Every field of medusa.training.settings.ModelSettings is a key of config/config.yaml, typed
    and required by the schema: a setting added to the code without its key fails here."""
    config = validate_config(recipe, SCHEMA)
    for model in config["models"]:
        ModelSettings.from_params(model_job_params(config, model))  # raises on a missing key
    schema = yaml.safe_load(SCHEMA.read_text())

    def properties(node):
        if "$ref" in node:
            node = schema["$defs"][node["$ref"].removeprefix("#/$defs/")]
        return node["properties"]

    settings_schema = schema["$defs"]["model_settings"]
    defaults_schema = schema["properties"]["model_defaults"]
    # Not model_defaults keys: the model's name and feature sets (its entry under `models`),
    # and the selection seed (`evaluation`).
    elsewhere = {"name", "features"}
    for field in set(settings_fields(ModelSettings)) - elsewhere:
        typed, required = settings_schema, defaults_schema
        *parents, key = field.split(".")
        for parent in parents:
            typed = properties(typed)[parent]
            required = required["properties"][parent]
        assert key in properties(typed), f"{field}: not in the schema's model settings"
        assert key in required["required"], f"model_defaults.{field}: not required"
    assert "bootstrap" in schema["properties"]["evaluation"]["required"]
    assert "features" in schema["properties"]["models"]["additionalProperties"]["required"]
    # And the other way round: every model setting of the schema is a field.
    fields = {f.name for f in dataclasses.fields(ModelSettings)}
    assert set(properties(settings_schema)) - {"enabled"} <= fields


def test_demo_and_ci_configs_give_complete_settings(recipe):
    config = recipe
    for path in CI_CONFIGS:
        config = deep_merge(config, yaml.safe_load(path.read_text()))
    config = validate_config(config, SCHEMA)
    for model in enabled_models(config):
        assert ModelSettings.from_params(model_job_params(config, model)).frame_pooling == 4


def test_model_override_is_merged_over_defaults(recipe):
    recipe["models"]["m05_wavlm_roberta"]["stage1"] = {"lr": 3e-5}
    config = validate_config(recipe, SCHEMA)
    resolved = model_config(config, "m05_wavlm_roberta")
    assert resolved["stage1"]["lr"] == 3e-5
    assert resolved["stage1"]["batch_size"] == 16  # from model_defaults, not masked
    assert resolved["features"] == ["wavlm", "roberta"]
    untouched = model_config(config, "m06_wavlm_roberta")
    assert untouched["stage1"]["lr"] == 1e-5


def test_canonical_json_ignores_key_order():
    assert canonical_json({"b": 1, "a": {"y": 2, "x": 1}}) == canonical_json(
        {"a": {"x": 1, "y": 2}, "b": 1}
    )


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda c: c["data"].update(colour="blue"), "data.colour"),
        (lambda c: c.update(modls={}), "unknown key modls"),
        (
            lambda c: c["models"]["m01_hubert_roberta"].update(hidden_size="big"),
            "models.m01_hubert_roberta.hidden_size",
        ),
        (
            lambda c: c["models"]["m01_hubert_roberta"].update(features=["hubert", "bert"]),
            "unknown feature set 'bert'",
        ),
        (
            lambda c: c["feature_sets"]["wavlm"].update(layer="sum_last3"),
            "feature_sets.wavlm.layer",
        ),
        (lambda c: c["feature_sets"]["wavlm"].update(layer=-2), "feature_sets.wavlm.layer"),
        (lambda c: c["meta"].update(seeds="six"), "meta.seeds"),
        (lambda c: c["model_defaults"]["stage1"].update(lr="fast"), "model_defaults.stage1.lr"),
        (lambda c: c["feature_sets"]["roberta"].update(kind="video"), "feature_sets.roberta.kind"),
    ],
)
def test_schema_errors_name_the_key(recipe, edit, expected):
    bad = copy.deepcopy(recipe)
    edit(bad)
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.").replace("(", r"\(")):
        validate_config(bad, SCHEMA)


def test_missing_data_root_says_what_to_do(tmp_path):
    """A dry run of the recipe without the corpus stops with directions, not a traceback."""
    run = run_snakemake(
        tmp_path,
        "-n",
        configfiles=[ROOT / "config/config.yaml"],
        config={"data": {"root": str(tmp_path / "nowhere")}},
    )
    assert run.returncode != 0
    message = " ".join((run.stdout + run.stderr).split())
    assert "data.root: no corpus at" in message and "make demo" in message
    assert "nowhere" in message and "Traceback" not in run.stderr


def test_snakemake_reports_config_errors_by_key(tmp_path):
    """The path a user takes: a bad key in a config file stops the dry run with the key named."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_defaults:\n  hidden_size: wide\n")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    run = run_snakemake(
        tmp_path,
        "-n",
        configfiles=[ROOT / "config/config.yaml", bad],
        config={"data": {"root": str(corpus)}},
    )
    assert run.returncode != 0
    assert "model_defaults.hidden_size" in run.stdout + run.stderr

    missing = run_snakemake(tmp_path, "-n", config={"data": {"root": str(tmp_path / "absent")}})
    assert missing.returncode != 0
    assert "make demo" in missing.stdout + missing.stderr


def test_disabled_models_leave_the_dag(recipe):
    recipe["models"]["m03_wavlm_whisper_hubert"]["enabled"] = False
    config = validate_config(recipe, SCHEMA)
    assert "m03_wavlm_whisper_hubert" not in enabled_models(config)
    assert len(enabled_models(config)) == 13
    assert "enabled" not in model_config(config, "m01_hubert_roberta")
    for model in recipe["models"].values():
        model["enabled"] = False
    with pytest.raises(ConfigError, match="at least one"):
        validate_config(recipe, SCHEMA)


def dry_run_job_inputs(output: str) -> dict[tuple[str, str], list[str]]:
    """(rule, wildcards) -> inputs of every job in a dry run's printout."""
    jobs, rule, inputs = {}, None, []
    for line in output.splitlines():
        stripped = line.strip()
        if line.startswith(("rule ", "localrule ")) and stripped.endswith(":"):
            rule, inputs = stripped.split()[1].rstrip(":"), []
        elif rule and stripped.startswith("input:"):
            inputs = stripped.removeprefix("input:").strip().split(", ")
        elif rule and stripped.startswith("wildcards:"):
            jobs[(rule, stripped.removeprefix("wildcards:").strip())] = inputs
            rule = None
    return jobs


def test_disabled_stage2_leaves_the_dag_and_posteriors_read_stage1(tmp_path):
    """stage2: {enabled: false} (ablation) is decided by the DAG: no stage2 job for the model,
    its posteriors read the stage-1 checkpoint; the other model keeps its stage 2."""
    generate_demo_corpus(tmp_path)
    off = {"models": {"m05_wavlm_roberta": {"stage2": {"enabled": False}}}}
    run = run_snakemake(tmp_path, "-n", configfiles=CI_CONFIGS, config=off)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    jobs = dry_run_job_inputs(run.stdout + "\n" + run.stderr)
    assert ("stage2", "model=m05_wavlm_roberta") not in jobs
    assert ("stage1", "model=m05_wavlm_roberta") in jobs
    assert ("stage2", "model=m13_whisper_wavlm") in jobs
    for posterior_set in ("labelled", "unlabelled"):
        wildcards = f"posterior_set={posterior_set}"
        m05 = jobs[("posteriors", f"model=m05_wavlm_roberta, {wildcards}")]
        assert "results/models/m05_wavlm_roberta/stage1/checkpoint.pt" in m05
        assert not any("/stage2/" in path for path in m05)
        m13 = jobs[("posteriors", f"model=m13_whisper_wavlm, {wildcards}")]
        assert "results/models/m13_whisper_wavlm/stage2/checkpoint.pt" in m13
