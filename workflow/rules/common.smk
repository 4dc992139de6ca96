# What the rules must see: the config-derived constants, input and params functions (no lambdas
# in rules). Each is a short call into the library, where the logic lives with its tests:
# medusa.dag.layout (artifact paths), medusa.dag.corpus_state (the corpus as the parse sees it),
# medusa.dag.inputs / medusa.dag.evaluation_inputs (what jobs read), medusa.dag.params
# (the sub-config each job depends on). None of them imports Snakemake or a model library.
import functools
import os
import sys

from snakemake.io import strip_wildcard_constraints

# The library lives in src/: importable at parse time and in every job's script, whether or
# not the package is pip-installed (conda environments from envs/ do not install it).
SRC_DIR = os.path.join(workflow.basedir, "src")
sys.path.insert(0, SRC_DIR)
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (SRC_DIR, os.environ.get("PYTHONPATH")) if p)
)

from medusa.dag import inputs as job_inputs
from medusa.dag import layout
from medusa.dag import params as job_params
from medusa.core.config import (
    ablation_variants,
    canonical_json,
    enabled_models,
    model_job_params,
    stage2_enabled,
    validate_config,
)
from medusa.core.emotions import ClassSet
from medusa.core.fetch import hub_model, whisper_checkpoint
from medusa.dag.layout import Layout, LayoutError, local_backbone_input
from medusa.dag import corpus_state as state
from medusa.corpus.guard import (
    DEMO_CORPUS_HOME,
    DEMO_TABLE_HOME,
    is_demo_home,
    refuse_outputs_in_corpus,
)
from medusa.corpus.table_layout import UNLABELLED
from medusa.dag import evaluation_inputs
from medusa.evaluation.conditions import condition_names, condition_spec, spec_json

validate_config(config, workflow.source_path("../schemas/config.schema.yaml"))

DATA_ROOT = config["data"]["root"].rstrip("/")
# msp_podcast (Audios/ + Labels/) or table (one CSV/TSV of clips, data.table).
DATA_LAYOUT = config["data"]["layout"]
DATA_TABLE = config["data"]["table"] if DATA_LAYOUT == "table" else None
# The classes every model learns and predicts (checked here, at parse time).
CLASSES = ClassSet.from_config(config["classes"])
# The held-out fold of a fold-style table (None: no folds): its split-dependent results go
# under results/fold<k>/, the audio index, ASR and features stay shared (medusa.dag.layout).
FOLD = layout.fold_of(config["data"])
LAYOUT = Layout(fold=FOLD, shards=config["shards"])
run_path = LAYOUT.run_path
log_path = LAYOUT.log_path

# The demo_corpus rule exists only in the demo's config and only when data.root is the demo
# corpus's fixed home: it can never write into a user's corpus (medusa.corpus.guard).
DEMO_CORPUS = "demo" in config and is_demo_home(DATA_ROOT, os.getcwd())
# Likewise the second demo corpus (table layout) and its rule demo_table_corpus.
DEMO_TABLE_CORPUS = "demo_table" in config and is_demo_home(
    DATA_ROOT, os.getcwd(), DEMO_TABLE_HOME
)


def checked(call, *args, **kwargs):
    """`call(*args, **kwargs)`, its LayoutError (naming the config key or file) shown as
    Snakemake's own WorkflowError."""
    try:
        return call(*args, **kwargs)
    except LayoutError as error:
        raise WorkflowError(str(error)) from None


def refuse_writes_into_corpus():
    """Stop the parse if any rule's output, log or benchmark could land inside data.root
    (called by the Snakefile once every rule is defined)."""
    products = [
        (rule.name, strip_wildcard_constraints(str(path)))
        for rule in workflow.rules
        for path in rule.products()
    ]
    refuse_outputs_in_corpus(products, DATA_ROOT, os.getcwd())


# ---------------------------------------------------------------- corpus and audio partitions


@functools.cache
def corpus_state():
    """The corpus's partition fingerprints, label digests and folds (medusa.dag.corpus_state), read
    once per parse, after the Snakefile has checked that no output lands in data.root; a
    cluster job's parse trusts the folders' and label files' states."""
    return checked(
        state.load_corpus_state,
        DATA_ROOT,
        layout.CONTENT_DIGEST_CACHE,
        layout=DATA_LAYOUT,
        table=DATA_TABLE,
        fold=FOLD,
        demo_home=DEMO_CORPUS or DEMO_TABLE_CORPUS,
        check_files=workflow.is_main_process,
    )


def corpus_partitions():
    """Audio partition -> fingerprint (the unlabelled partition always exists, maybe empty)."""
    return corpus_state().partitions


def has_folds():
    return bool(corpus_state().folds)


def labelled_subsets():
    return state.labelled_subsets(corpus_partitions())


def prepare_params(wildcards):
    labels = corpus_state().labels
    return job_params.prepare_params(config["data"], labels, CLASSES.to_config())


def corpus_params():
    return job_params.corpus_params(DATA_LAYOUT, DATA_TABLE)


def fold_reports(wildcards):
    return checked(state.fold_report_inputs, corpus_state().folds, FOLD)


def fold_summary_params(wildcards):
    return canonical_json(list(corpus_state().folds))


def audio_fingerprint(wildcards):
    fingerprint = state.partition_fingerprint
    return checked(fingerprint, corpus_partitions(), wildcards.partition, DATA_ROOT)


def labelled_audio_indexes(wildcards):
    """Never the unlabelled index: new unlabelled audio must not change the manifest."""
    return layout.audio_indexes(state.labelled_partitions(corpus_partitions()))


def demo_params():
    return canonical_json(config["demo"])


def demo_table_params():
    return canonical_json(config["demo_table"])


# ---------------------------------------------------------------- models, shards, features

SHARDED = LAYOUT.sharded
MODELS = enabled_models(config)
# Table 2's ablation models (`<model>__no_<switch>`), trained only for the `ablations` target.
ABLATIONS = ablation_variants(config)
# Models whose stage 2 runs; for the others (`stage2: {enabled: false}`, ablation) the
# posteriors read the stage-1 checkpoint and no stage2 job exists.
STAGE2_MODELS = [m for m in [*MODELS, *ABLATIONS] if stage2_enabled(config, m)]
# CPU threads of each GPU job (data loading, and the computation itself on a CPU-only machine).
GPU_JOB_THREADS = config["threads_per_gpu_job"]
META_SEEDS = list(config["meta"]["seeds"])
TOP_K = sorted(set(config["meta"]["top_k"]), reverse=True)


wildcard_constraints:
    partition=r"[a-z0-9_]+",
    posterior_set="labelled|unlabelled",
    feature_set="|".join(config["feature_sets"]),
    model="|".join([*MODELS, *ABLATIONS]),
    seed=r"\d+",
    k=r"\d+",
    shard=r"\d+",
    repo=r"[^/@]+",
    revision=r"[^/]+",
    sha256=r"[0-9a-f]{64}",
    corpus=r"[A-Za-z0-9_-]+",


sharded_path = LAYOUT.sharded_path


def sharded_output(stem, suffix):
    """A job's output: the final file, or a temporary shard that the merge job consumes."""
    path = sharded_path(stem, suffix)
    return temp(path) if SHARDED else path


# ---------------------------------------------------------------- remote models (fetch.smk)

# Where fetch_models puts hub backbones and the ASR checkpoint, one copy per revision.
MODEL_STORE = os.path.normpath(config["model_store"])
# Hub backbones by feature set; None for local folders (used as they are).
HUB_BACKBONES = {
    name: hub_model(feature_set, f"feature_sets.{name}")
    for name, feature_set in config["feature_sets"].items()
}
# Fetched folder -> hub model (two feature sets may share one).
HUB_FOLDERS = {
    str(m.folder(MODEL_STORE)): m for m in HUB_BACKBONES.values() if m is not None
}
# The openai-whisper checkpoint to fetch, or None for a local checkpoint file.
WHISPER_CHECKPOINT = whisper_checkpoint(config["asr"])


def fetched_models():
    return job_inputs.fetched_models(list(HUB_FOLDERS), WHISPER_CHECKPOINT, MODEL_STORE)


def fetch_hub_params(wildcards):
    folder = layout.fetched_hub_folder(MODEL_STORE, wildcards.repo, wildcards.revision)
    return job_params.fetch_hub_params(HUB_FOLDERS[folder])


def fetch_whisper_params(wildcards):
    return job_params.fetch_whisper_params(WHISPER_CHECKPOINT)


def asr_params():
    return job_params.asr_params(config["asr"], WHISPER_CHECKPOINT)


def asr_inputs(wildcards):
    model, partition = config["asr"]["model"], wildcards.partition
    return job_inputs.asr_inputs(partition, model, WHISPER_CHECKPOINT, MODEL_STORE)


def asr_shards(wildcards):
    return LAYOUT.shard_files(f"results/asr/{wildcards.partition}", ".jsonl")


def feature_set_params(wildcards):
    name = wildcards.feature_set
    feature_set, hub = config["feature_sets"][name], HUB_BACKBONES[name]
    return job_params.feature_set_params(feature_set, hub)


def feature_inputs(wildcards):
    feature_set = config["feature_sets"][wildcards.feature_set]
    hub = HUB_BACKBONES[wildcards.feature_set]
    return job_inputs.feature_inputs(feature_set, wildcards.partition, hub, MODEL_STORE)


def feature_shards(wildcards):
    stem = f"results/features/{wildcards.feature_set}/{wildcards.partition}"
    return LAYOUT.shard_files(stem, ".h5")


# ---------------------------------------------------------------- models


def model_params(wildcards):
    """The model's resolved settings (medusa.training.settings.ModelSettings)."""
    return canonical_json(model_job_params(config, wildcards.model))


def stage1_inputs(wildcards):
    return job_inputs.stage_inputs(LAYOUT, config, wildcards.model, has_folds())


def stage2_inputs(wildcards):
    model = wildcards.model
    return job_inputs.stage_inputs(LAYOUT, config, model, has_folds(), "stage2")


def stage2_model_pattern():
    """The stage2 rule's wildcard constraint: only models whose stage 2 is enabled."""
    return "|".join(STAGE2_MODELS) or "(?!)"  # (?!) matches nothing


def final_checkpoint(model):
    return job_inputs.final_checkpoint(LAYOUT, model, STAGE2_MODELS)


def posterior_subsets(wildcards):
    return job_inputs.posterior_subsets(wildcards.posterior_set, labelled_subsets())


def posterior_inputs(wildcards):
    model, posterior_set = wildcards.model, wildcards.posterior_set
    subsets = labelled_subsets()
    args = (model, posterior_set, subsets, STAGE2_MODELS, has_folds())
    return job_inputs.posterior_inputs(LAYOUT, config, *args)


def labelled_posteriors(wildcards):
    return LAYOUT.posteriors(MODELS)


def unlabelled_posteriors(wildcards):
    return LAYOUT.posteriors(MODELS, "unlabelled")


# ---------------------------------------------------------------- ensemble, report, bundle


def meta_params(wildcards):
    return job_params.meta_params(config["meta"], MODELS)


def top_k_heads(wildcards):
    return LAYOUT.meta_heads(META_SEEDS, wildcards.k)


def report_inputs(wildcards):
    return evaluation_inputs.report_inputs(LAYOUT, MODELS, META_SEEDS, TOP_K)


def evaluation_params():
    return canonical_json(config["evaluation"])


def soup_params():
    return canonical_json(config["soup"])


def model_features_json():
    return job_params.model_features(config["models"], MODELS)


def table2_inputs(wildcards):
    return evaluation_inputs.table2_inputs(LAYOUT, ABLATIONS)


def ablations_params():
    return canonical_json(config["ablations"])


# The feature sets the enabled models read, in config order (the bundle records them).
BUNDLE_FEATURE_SETS = job_params.bundle_feature_sets(config, MODELS)


def bundle_feature_files(wildcards):
    """One feature file per bundled feature set (the training partition's)."""
    return job_inputs.subset_feature_files(BUNDLE_FEATURE_SETS, "train", has_folds())


# Evaluation corpora of the `cross_corpus` target (name -> table and label mapping).
CROSS_CORPORA = list(config["cross_corpus"])


def cross_corpus_table(wildcards):
    """The evaluation corpus's table (its audio paths are relative to the table's folder)."""
    return config["cross_corpus"][wildcards.corpus]["table"]


def cross_corpus_params(wildcards):
    """Only this corpus's entry: editing one corpus's mapping rescores only it."""
    return canonical_json(config["cross_corpus"][wildcards.corpus])


# ---------------------------------------------------------------- robustness (robustness.smk)

# The enabled perturbation conditions of the `robustness` target, checked at parse time (a bad
# entry names its key: robustness.conditions.<name>.<parameter>).
ROBUSTNESS_CONDITIONS = condition_names(config["robustness"])


def robustness_condition_pattern():
    """The `condition` wildcard: only enabled condition names (letters, digits, _ and -)."""
    return "|".join(ROBUSTNESS_CONDITIONS) or "(?!)"  # (?!) matches nothing


def robustness_babble_partition(wildcards):
    babble = evaluation_inputs.babble_partition
    return babble(config["robustness"], wildcards.condition, has_folds())


def robustness_perturb_params(wildcards):
    """Only this condition's spec: editing one condition reruns only its chain."""
    return canonical_json(condition_spec(config["robustness"], wildcards.condition))


def robustness_audio_params(wildcards):
    """The content of the partitions the job reads (see rule asr's `audio`)."""
    partitions = [wildcards.partition, robustness_babble_partition(wildcards)]
    return job_params.audio_params(corpus_partitions(), partitions)


def robustness_perturb_inputs(wildcards):
    babble = robustness_babble_partition(wildcards)
    return evaluation_inputs.perturb_inputs(wildcards.partition, babble)


def robustness_asr_inputs(wildcards):
    """As rule asr's, on the condition's perturbed clips."""
    clips = layout.perturbed_clips(wildcards.condition, wildcards.partition)
    return {**asr_inputs(wildcards), **clips}


def robustness_feature_inputs(wildcards):
    """As rule features', on the condition's perturbed clips and their own transcripts."""
    condition, partition = wildcards.condition, wildcards.partition
    clean = feature_inputs(wildcards)
    return evaluation_inputs.perturbed_feature_inputs(clean, condition, partition)


def robustness_posterior_inputs(wildcards):
    args = (wildcards.model, wildcards.condition, STAGE2_MODELS, has_folds())
    return evaluation_inputs.robustness_posterior_inputs(LAYOUT, config, *args)


def robustness_table_inputs(wildcards):
    tables = evaluation_inputs.robustness_table_inputs
    return checked(tables, LAYOUT, ROBUSTNESS_CONDITIONS, MODELS)


def robustness_table_params():
    """Every enabled condition's spec, in config order (the table's rows)."""
    return spec_json(config["robustness"])


# ---------------------------------------------------------------- evidence (evidence.smk)


def evidence_inputs(wildcards):
    return evaluation_inputs.evidence_inputs(LAYOUT, CROSS_CORPORA)
