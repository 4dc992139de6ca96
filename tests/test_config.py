"""Config validation: schema errors name the key, defaults are filled, sub-configs are canonical."""

import copy
from pathlib import Path

import pytest
import yaml

from medusa.config import (
    ConfigError,
    canonical_json,
    enabled_models,
    model_config,
    validate_config,
)

from workflow_runner import run_snakemake

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
    assert config["meta"]["batch_size"] == 128 and config["meta"]["lr"] == 1e-3


def test_defaults_are_filled(recipe):
    del recipe["meta"]
    del recipe["model_defaults"]["stage2"]
    config = validate_config(recipe, SCHEMA)
    assert config["meta"]["head"] == "linear"
    assert config["meta"]["loss_weights"]["classes"] == 1.5
    assert config["model_defaults"]["stage2"]["lr"] == 1e-6
    assert config["model_defaults"]["stage2"]["patience"] == 5


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
