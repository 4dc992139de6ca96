# Helpers and input functions shared by every rule file (no lambdas in rules).
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

from medusa.core.config import (
    ablation_variants,
    canonical_json,
    enabled_models,
    resolved_model,
    model_job_params,
    stage2_enabled,
    validate_config,
)
from medusa.corpus.guard import (
    DEMO_CORPUS_HOME,
    DEMO_TABLE_HOME,
    is_demo_home,
    missing_corpus_message,
    refuse_outputs_in_corpus,
)
from medusa.core.fetch import hub_model, whisper_checkpoint
from medusa.core.emotions import ClassSet
from medusa.corpus.table_layout import UNLABELLED
from medusa.corpus.partitions import corpus_fingerprints, partition_of_subset

validate_config(config, workflow.source_path("../schemas/config.schema.yaml"))

DATA_ROOT = config["data"]["root"].rstrip("/")
# msp_podcast (Audios/ + Labels/) or table (one CSV/TSV of clips, data.table).
DATA_LAYOUT = config["data"]["layout"]
DATA_TABLE = config["data"]["table"] if DATA_LAYOUT == "table" else None
# The classes every model learns and predicts (checked here, at parse time).
CLASSES = ClassSet.from_config(config["classes"])
# A fold-style table runs the recipe once per held-out fold: everything that depends on the
# split (manifest, models, posteriors, ensemble, report, bundle) goes under results/fold<k>/,
# while the audio index, ASR and features stay shared in results/ (they never read labels).
# The fold as a number's text ("2" from `--config 'data={fold: 2}'` and from YAML alike).
FOLD = None if config["data"]["fold"] is None else str(int(config["data"]["fold"]))
RUN = "results" if FOLD is None else f"results/fold{FOLD}"
LOGS = "logs" if FOLD is None else f"logs/fold{FOLD}"


def run_path(path):
    """`path` under the split-dependent results folder (results/ or results/fold<k>/)."""
    return f"{RUN}/{path}"


def log_path(path):
    """`path` under the split-dependent logs folder (logs/ or logs/fold<k>/)."""
    return f"{LOGS}/{path}"


# The demo_corpus rule exists only in the demo's config and only when data.root is the demo
# corpus's fixed home: it can never write into a user's corpus (medusa.corpus.guard).
DEMO_CORPUS = "demo" in config and is_demo_home(DATA_ROOT, os.getcwd())
# Likewise the second demo corpus (table layout) and its rule demo_table_corpus.
DEMO_TABLE_CORPUS = "demo_table" in config and is_demo_home(
    DATA_ROOT, os.getcwd(), DEMO_TABLE_HOME
)


def refuse_writes_into_corpus():
    """Stop the parse if any rule's output, log or benchmark could land inside data.root
    (called by the Snakefile once every rule is defined)."""
    products = [
        (rule.name, strip_wildcard_constraints(str(path)))
        for rule in workflow.rules
        for path in rule.products()
    ]
    refuse_outputs_in_corpus(products, DATA_ROOT, os.getcwd())


def prepare_params(wildcards):
    """The data sub-config without data.root (editing models never re-prepares the data)
    and the label files' content digests: the labels are not inputs (their path changes
    with data.root, their times with a copy), so only new content reruns `prepare`.
    """
    data = {k: v for k, v in config["data"].items() if k != "root"}
    labels = corpus_state().labels
    return canonical_json(
        {"data": data, "labels": labels, "classes": CLASSES.to_config()}
    )


def corpus_params():
    """The corpus layout (and a table's path) the table layout's audio_index jobs read."""
    return canonical_json({"layout": DATA_LAYOUT, "table": DATA_TABLE})


# ---------------------------------------------------------------- audio partitions

# Content digests of the corpus files, by file identity (medusa.core.content_hash): outside
# data.root (never written) and outside .snakemake/ (kept by --cleanup-metadata and friends).
CONTENT_DIGEST_CACHE = "results/cache/content-digests.tsv"
_CORPUS_STATE = []


def corpus_state():
    """The corpus's partition fingerprints and label digests (medusa.partitions), read once per
    parse, after the Snakefile has checked that no output lands in data.root.

    ASR and features run per partition: a partition whose audio content changed, and only that
    one, gets a new fingerprint and is indexed, transcribed and extracted again. The
    fingerprints hold names relative to data.root and content digests, never paths or times.
    """
    if not _CORPUS_STATE:
        if not corpus_present():
            raise WorkflowError(
                missing_corpus_message(
                    DATA_ROOT,
                    demo_home=DEMO_CORPUS or DEMO_TABLE_CORPUS,
                    table=DATA_TABLE,
                )
            )
        # The scan is cached (medusa.corpus.scan_cache); a cluster job's parse trusts the folders'
        # and label files' states, the main process also checks every audio file's.
        state = corpus_fingerprints(
            DATA_ROOT,
            CONTENT_DIGEST_CACHE,
            layout=DATA_LAYOUT,
            table=DATA_TABLE,
            check_files=workflow.is_main_process,
        )
        check_fold(state.folds)
        _CORPUS_STATE.append(state)
    return _CORPUS_STATE[0]


def corpus_present():
    """Whether data.root holds the files its layout reads."""
    if DATA_LAYOUT == "table":
        return os.path.isfile(os.path.join(DATA_ROOT, DATA_TABLE))
    labels = os.path.join(DATA_ROOT, "Labels", "labels_consensus.csv")
    return os.path.isfile(labels) and os.path.isdir(os.path.join(DATA_ROOT, "Audios"))


def check_fold(folds):
    """data.fold must name one of a fold-style table's folds, and only such a table's."""
    if folds and FOLD is None:
        raise WorkflowError(
            f"data.fold: {os.path.join(DATA_ROOT, DATA_TABLE)} has folds {', '.join(folds)}; "
            "set data.fold to the fold held out (e.g. --config 'data={fold: 1}')"
        )
    if FOLD is not None and FOLD not in folds:
        found = (
            f"its folds are {', '.join(folds)}" if folds else "it has no numbered folds"
        )
        raise WorkflowError(f"data.fold: {FOLD} is not a fold of the corpus ({found})")


def fold_reports(wildcards):
    """Table 1 and Table 3 of every fold's report: the configured fold's are built by this
    run, the others must exist from that fold's own run (`--config 'data={fold: <k>}'`).
    """
    folds = corpus_state().folds
    if not folds:
        raise WorkflowError(
            "folds: the corpus has no numbered folds (a table layout whose partition column "
            "holds fold numbers); its results are in results/report/"
        )
    reports = {f: f"results/fold{f}/report" for f in folds}
    missing = [f for f in folds if f != FOLD and not os.path.isdir(reports[f])]
    if missing:
        runs = "; ".join(
            f"snakemake soup --config 'data={{fold: {f}}}' ..." for f in missing
        )
        raise WorkflowError(
            f"folds: no report yet for fold(s) {', '.join(missing)}: run each fold first "
            f"with the same config files ({runs}), then `snakemake folds`"
        )
    return {
        "table1": [f"{reports[f]}/table1.tsv" for f in folds],
        "table3": [f"{reports[f]}/table3.tsv" for f in folds],
    }


def fold_summary_params(wildcards):
    return canonical_json(list(corpus_state().folds))


def corpus_partitions():
    """Audio partition -> fingerprint (the unlabelled partition always exists, maybe empty)."""
    return corpus_state().partitions


def labelled_partitions():
    return sorted(p for p in corpus_partitions() if p != UNLABELLED)


def labelled_subsets():
    """Manifest subsets with labels: train, holdout and meta (all in the `train` partition),
    dev (`development`), and any other Split_Set under its own name; a fold-style table's
    four subsets all live in its `labelled` partition."""
    names = {
        "train": ["train", "holdout", "meta"],
        "development": ["dev"],
        "labelled": ["train", "holdout", "meta", "dev"],
    }
    return [s for p in labelled_partitions() for s in names.get(p, [p])]


def audio_fingerprint(wildcards):
    if wildcards.partition not in corpus_partitions():
        raise WorkflowError(
            f"no audio partition {wildcards.partition!r} in {DATA_ROOT} "
            f"(partitions: {', '.join(sorted(corpus_partitions()))})"
        )
    return corpus_partitions()[wildcards.partition]


def labelled_audio_indexes(wildcards):
    """The audio indexes `prepare` joins with the labels (the unlabelled one never: new
    unlabelled audio must not change the manifest)."""
    return expand("results/audio/{partition}.tsv", partition=labelled_partitions())


LOCAL_BACKBONE_DIR = "resources/backbones/"


def demo_params():
    return canonical_json(config["demo"])


def demo_table_params():
    return canonical_json(config["demo_table"])


def local_backbone_input(model_path):
    """The resources/backbones/<name> folder a model path lives in, when the workflow builds it.

    Hub ids and user folders elsewhere are not inputs (nothing to build).
    """
    if not model_path.startswith(LOCAL_BACKBONE_DIR):
        return []
    name = model_path[len(LOCAL_BACKBONE_DIR) :].split("/")[0]
    return [LOCAL_BACKBONE_DIR + name]


# ---------------------------------------------------------------- subsets, shards, features

# Subsets a training job reads: train, holdout (model selection) and dev (reported evaluation).
TRAINING_SUBSETS = ("train", "holdout", "dev")
SHARDS = range(config["shards"])
SHARDED = config["shards"] > 1
MODELS = enabled_models(config)
# Table 2's ablation models (`<model>__no_<switch>`), trained only for the `ablations` target.
ABLATIONS = ablation_variants(config)
# Models whose stage 2 runs; for the others (`stage2: {enabled: false}`, ablation) the
# posteriors read the stage-1 checkpoint and no stage2 job exists.
STAGE2_MODELS = [m for m in [*MODELS, *ABLATIONS] if stage2_enabled(config, m)]
# CPU threads of each GPU job (data loading, and the computation itself on a CPU-only machine).
GPU_JOB_THREADS = config["threads_per_gpu_job"]
META_SEEDS = list(config["meta"]["seeds"])


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


def sharded_path(stem, suffix):
    """`stem/shard{shard}suffix` when subsets are sharded, else `stem suffix`.

    With one shard (the default) ASR and feature jobs write their final files directly and no
    merge job runs.
    """
    return f"{stem}/shard{{shard}}{suffix}" if SHARDED else f"{stem}{suffix}"


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
    """Every remote model of the config, as the local copies fetch_models makes."""
    asr_file = [str(WHISPER_CHECKPOINT.path(MODEL_STORE))] if WHISPER_CHECKPOINT else []
    return [*HUB_FOLDERS, *asr_file]


def fetch_hub_params(wildcards):
    """The repository and revision a fetched folder holds (only its own: one folder per pair)."""
    model = HUB_FOLDERS[f"{MODEL_STORE}/hub/{wildcards.repo}@{wildcards.revision}"]
    return canonical_json({"repo_id": model.repo_id, "revision": model.revision})


def fetch_whisper_params(wildcards):
    return canonical_json(
        {"url": WHISPER_CHECKPOINT.url, "sha256": WHISPER_CHECKPOINT.sha256}
    )


def asr_params():
    """Only the ASR sub-config: changing a model or a feature set never reruns ASR. The
    revision (sha256) of a fetched checkpoint is always in it, given or resolved."""
    asr = dict(config["asr"])
    if WHISPER_CHECKPOINT:
        asr["revision"] = WHISPER_CHECKPOINT.sha256
    return canonical_json(asr)


def asr_inputs(wildcards):
    """The partition's clip table and the checkpoint: built by the workflow (demo), fetched
    (a release name or URL), or a user's own file (not an input)."""
    inputs = {
        "index": f"results/audio/{wildcards.partition}.tsv",
        "model": local_backbone_input(config["asr"]["model"]),
    }
    if WHISPER_CHECKPOINT:
        inputs["fetched"] = str(WHISPER_CHECKPOINT.path(MODEL_STORE))
    return inputs


def asr_shards(wildcards):
    return expand(
        "results/asr/{partition}/shard{shard}.jsonl",
        partition=wildcards.partition,
        shard=SHARDS,
    )


def feature_set_params(wildcards):
    """Only this feature set's sub-config (canonical), so editing it re-extracts only it; a
    hub backbone's revision is always in it (default main)."""
    feature_set = dict(config["feature_sets"][wildcards.feature_set])
    hub = HUB_BACKBONES[wildcards.feature_set]
    if hub is not None:
        feature_set["revision"] = hub.revision
    return canonical_json(feature_set)


def feature_inputs(wildcards):
    """The partition's clip table, the backbone when the workflow builds it (or its fetched
    copy, for a hub id), and the partition's transcripts for text (never the manifest: features do not depend on labels).
    """
    feature_set = config["feature_sets"][wildcards.feature_set]
    inputs = {
        "index": f"results/audio/{wildcards.partition}.tsv",
        "backbone": local_backbone_input(feature_set["backbone"]),
    }
    hub = HUB_BACKBONES[wildcards.feature_set]
    if hub is not None:
        inputs["fetched"] = str(hub.folder(MODEL_STORE))
    if feature_set["kind"] == "text":
        inputs["transcripts"] = f"results/asr/{wildcards.partition}.jsonl"
    return inputs


def feature_shards(wildcards):
    return expand(
        "results/features/{feature_set}/{partition}/shard{shard}.h5",
        feature_set=wildcards.feature_set,
        partition=wildcards.partition,
        shard=SHARDS,
    )


# ---------------------------------------------------------------- models


def model_params(wildcards):
    """The model's resolved settings and the seed of the balanced holdout it is selected on
    (medusa.training.settings.ModelSettings), canonical JSON."""
    return canonical_json(model_job_params(config, wildcards.model))


def feature_files(model, subset):
    """The model's feature files (model order) of the audio partition holding `subset`."""
    return expand(
        "results/features/{feature_set}/{partition}.h5",
        feature_set=resolved_model(config, model)["features"],
        partition=partition_of_subset(subset, folds=bool(corpus_state().folds)),
    )


def stage1_inputs(wildcards):
    """Manifest and the features of train, holdout and dev: nothing of the unlabelled
    partition, so new unlabelled audio never retrains a model."""
    inputs = {"manifest": run_path("data/manifest.tsv")}
    for subset in TRAINING_SUBSETS:
        inputs[subset] = feature_files(wildcards.model, subset)
    return inputs


def stage2_inputs(wildcards):
    return {
        **stage1_inputs(wildcards),
        "init": f"{RUN}/models/{wildcards.model}/stage1/checkpoint.pt",
    }


def stage2_model_pattern():
    """The stage2 rule's wildcard constraint: only models whose stage 2 is enabled."""
    return "|".join(STAGE2_MODELS) or "(?!)"  # (?!) matches nothing


def final_checkpoint(model):
    """The checkpoint a model's posteriors come from: stage 2's, or stage 1's when the
    model's stage2.enabled is false."""
    stage = "stage2" if model in STAGE2_MODELS else "stage1"
    return f"{RUN}/models/{model}/{stage}/checkpoint.pt"


def posterior_subsets(wildcards):
    """Subsets a posteriors file holds: every labelled subset, or the unlabelled `test`."""
    if wildcards.posterior_set == "unlabelled":
        return ["test"]
    return labelled_subsets()


def posterior_inputs(wildcards):
    """The model's final checkpoint, the clips to score (manifest, or the unlabelled
    partition's index) and the model's features of each subset."""
    inputs = {"checkpoint": final_checkpoint(wildcards.model)}
    if wildcards.posterior_set == "unlabelled":
        inputs["index"] = f"results/audio/{UNLABELLED}.tsv"
    else:
        inputs["manifest"] = run_path("data/manifest.tsv")
    for subset in posterior_subsets(wildcards):
        inputs[subset] = feature_files(wildcards.model, subset)
    return inputs


def labelled_posteriors(wildcards):
    return expand(run_path("posteriors/{model}/labelled.h5"), model=MODELS)


def unlabelled_posteriors(wildcards):
    return expand(run_path("posteriors/{model}/unlabelled.h5"), model=MODELS)


# ---------------------------------------------------------------- ensemble


def meta_params(wildcards):
    """Meta-classifier settings (not the list of seeds: the seed is the job's wildcard, so
    adding a seed runs only that seed) plus the model order (the head's input layout).
    """
    meta = {k: v for k, v in config["meta"].items() if k not in ("seeds", "top_k")}
    return canonical_json({"meta": meta, "models": MODELS})


TOP_K = sorted(set(config["meta"]["top_k"]), reverse=True)


def top_k_heads(wildcards):
    return expand(
        run_path("meta/top{k}/seed{seed}/head.pt"), k=wildcards.k, seed=META_SEEDS
    )


def report_inputs(wildcards):
    """Everything the report scores: every model's posteriors, the meta seeds and soup of
    the whole ensemble and of each top-k ensemble (Table 3), the soup's temperature
    (Table C)."""
    return {
        "manifest": run_path("data/manifest.tsv"),
        "posteriors": labelled_posteriors(wildcards),
        "meta": expand(run_path("meta/seed{seed}/metrics.json"), seed=META_SEEDS),
        "soup": run_path("soup/head.pt"),
        "temperature": run_path("soup/temperature.json"),
        "top_meta": expand(
            run_path("meta/top{k}/seed{seed}/metrics.json"), k=TOP_K, seed=META_SEEDS
        ),
        "top_soups": expand(run_path("soup/top{k}/head.pt"), k=TOP_K),
    }


# The feature sets the enabled models read, in config order (the bundle records them).
BUNDLE_FEATURE_SETS = [
    fs
    for fs in config["feature_sets"]
    if any(fs in config["models"][model]["features"] for model in MODELS)
]


def bundle_feature_files(wildcards):
    """One feature file per bundled feature set (the training partition's), for its attributes."""
    return expand(
        "results/features/{feature_set}/{partition}.h5",
        feature_set=BUNDLE_FEATURE_SETS,
        partition=partition_of_subset("train", folds=bool(corpus_state().folds)),
    )


# Evaluation corpora of the `cross_corpus` target (name -> table and label mapping).
CROSS_CORPORA = list(config["cross_corpus"])


def cross_corpus_table(wildcards):
    """The evaluation corpus's table (its audio paths are relative to the table's folder)."""
    return config["cross_corpus"][wildcards.corpus]["table"]


def cross_corpus_params(wildcards):
    """Only this corpus's entry: editing one corpus's mapping rescores only it."""
    return canonical_json(config["cross_corpus"][wildcards.corpus])


def evaluation_params():
    return canonical_json(config["evaluation"])


def soup_params():
    return canonical_json(config["soup"])


def table2_inputs(wildcards):
    """The labelled posteriors of every ablated model and of each of its ablations."""
    models = sorted({base for base, _ in ABLATIONS.values()} | set(ABLATIONS))
    return {
        "manifest": run_path("data/manifest.tsv"),
        "posteriors": expand(run_path("posteriors/{model}/labelled.h5"), model=models),
    }


def ablations_params():
    return canonical_json(config["ablations"])


def model_features_json():
    """Which feature sets each model fuses (for the report's Table 1)."""
    return canonical_json({m: config["models"][m]["features"] for m in MODELS})


# ---------------------------------------------------------------- robustness (robustness.smk)

from medusa.evaluation.conditions import condition_names, condition_spec, spec_json

# The enabled perturbation conditions of the `robustness` target, checked at parse time (a bad
# entry names its key: robustness.conditions.<name>.<parameter>).
ROBUSTNESS_CONDITIONS = condition_names(config["robustness"])
# Perturbed audio, its transcripts and features never read labels: shared by every fold, like
# results/asr and results/features; the posteriors and Table R depend on the split (RUN).
ROBUSTNESS = "results/robustness"


def robustness_condition_pattern():
    """The `condition` wildcard: only enabled condition names (letters, digits, _ and -)."""
    return "|".join(ROBUSTNESS_CONDITIONS) or "(?!)"  # (?!) matches nothing


def robustness_partition():
    """The audio partition holding the dev clips. It is perturbed whole, so that ASR and
    features stay keyed by audio alone (no manifest: a new split reruns none of them, and a
    fold-style table's `labelled` partition serves every fold); only its dev clips are scored.
    """
    return partition_of_subset("dev", folds=bool(corpus_state().folds))


def robustness_babble_partition(wildcards):
    """The training partition, whose clips a babble condition mixes; None for other kinds."""
    spec = condition_spec(config["robustness"], wildcards.condition)
    if spec["kind"] != "babble":
        return None
    return partition_of_subset("train", folds=bool(corpus_state().folds))


def robustness_perturb_params(wildcards):
    """Only this condition's kind, seed and parameters: editing one condition reruns only
    its chain (a babble's clips are an input, the training partition's index)."""
    return canonical_json(condition_spec(config["robustness"], wildcards.condition))


def robustness_audio_params(wildcards):
    """The content of the partitions the job reads (see rule asr's `audio`)."""
    partitions = [wildcards.partition, robustness_babble_partition(wildcards)]
    return canonical_json({p: corpus_partitions()[p] for p in partitions if p})


def robustness_perturb_inputs(wildcards):
    """The partition's clip table, and the training partition's for babble."""
    inputs = {"index": f"results/audio/{wildcards.partition}.tsv"}
    babble = robustness_babble_partition(wildcards)
    if babble:
        inputs["babble"] = f"results/audio/{babble}.tsv"
    return inputs


def perturbed_clips(wildcards):
    """A condition's perturbed partition: its clip table (paths relative to the folder)."""
    stem = f"{ROBUSTNESS}/{wildcards.condition}/audio/{wildcards.partition}"
    return {"index": f"{stem}.tsv", "audio": stem}


def robustness_asr_inputs(wildcards):
    """As rule asr's, on the condition's perturbed clips."""
    return {**asr_inputs(wildcards), **perturbed_clips(wildcards)}


def robustness_feature_inputs(wildcards):
    """As rule features', on the condition's perturbed clips and their own transcripts."""
    inputs = {**feature_inputs(wildcards), **perturbed_clips(wildcards)}
    if "transcripts" in inputs:
        inputs["transcripts"] = (
            f"{ROBUSTNESS}/{wildcards.condition}/asr/{wildcards.partition}.jsonl"
        )
    return inputs


def robustness_posterior_inputs(wildcards):
    """The model's final checkpoint, the manifest (which clips are dev) and the model's
    features of the condition's perturbed partition."""
    return {
        "checkpoint": final_checkpoint(wildcards.model),
        "manifest": run_path("data/manifest.tsv"),
        "dev": expand(
            "results/robustness/{condition}/features/{feature_set}/{partition}.h5",
            condition=wildcards.condition,
            feature_set=resolved_model(config, wildcards.model)["features"],
            partition=robustness_partition(),
        ),
    }


def robustness_table_inputs(wildcards):
    """Clean posteriors and soup (the report's), and every condition's posteriors."""
    if not ROBUSTNESS_CONDITIONS:
        raise WorkflowError(
            "robustness.conditions: no enabled condition (config/config.yaml lists them)"
        )
    return {
        "manifest": run_path("data/manifest.tsv"),
        "clean": labelled_posteriors(wildcards),
        "soup": run_path("soup/head.pt"),
        "perturbed": expand(
            run_path("robustness/{condition}/posteriors/{model}.h5"),
            condition=ROBUSTNESS_CONDITIONS,
            model=MODELS,
        ),
    }


def robustness_table_params():
    """Every enabled condition's spec, in config order (the table's rows)."""
    return spec_json(config["robustness"])


# ---------------------------------------------------------------- evidence (evidence.smk)


def cross_corpus_results(name):
    """One results file (`name`) of every configured evaluation corpus, in config order."""
    return expand(run_path(f"cross_corpus/{{corpus}}/{name}"), corpus=CROSS_CORPORA)


def evidence_inputs(wildcards):
    """Table R (robustness), the report's Table C and Table 1 (its best single model and the
    soup's dev macro-F1), and the cross-corpus results of every configured corpus (none: the
    document says so)."""
    return {
        "robustness_table": run_path("report/robustness.tsv"),
        "robustness_markdown": run_path("report/robustness.md"),
        "calibration": run_path("report/calibration.tsv"),
        "table1": run_path("report/table1.tsv"),
        "cross_corpus": cross_corpus_results("metrics.tsv"),
        "cross_corpus_excluded": cross_corpus_results("excluded.tsv"),
        "cross_corpus_unmapped": cross_corpus_results("unmapped.tsv"),
    }
