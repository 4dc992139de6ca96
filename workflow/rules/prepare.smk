# The MSP-Podcast layout's audio_index rule is unchanged by the table layout (its jobs, and
# the ASR and features after them, do not rerun); the table layout has its own script.
if DATA_LAYOUT == "table":

    rule audio_index:
        """One audio partition's clips (durations, rates, channels, unreadable files), no labels:
        the table layout's partitions (the table's partition column, labelled or not).
        """
        output:
            index="results/audio/{partition}.tsv",
            report=report(
                "results/audio/{partition}.md",
                caption="../report/audio.rst",
                category="Data",
                labels={"partition": "{partition}"},
            ),
        log:
            "logs/audio_index/{partition}.log",
        benchmark:
            "results/benchmarks/audio_index/{partition}.tsv"
        conda:
            "../../envs/medusa.yaml"
        params:
            # Names and content of the partition's files: not data.root, not their times.
            audio=audio_fingerprint,
            corpus=corpus_params(),
        script:
            "../scripts/table_audio_index.py"

else:

    rule audio_index:
        """One audio partition's clips (durations, rates, channels, unreadable files), no labels."""
        output:
            index="results/audio/{partition}.tsv",
            report=report(
                "results/audio/{partition}.md",
                caption="../report/audio.rst",
                category="Data",
                labels={"partition": "{partition}"},
            ),
        log:
            "logs/audio_index/{partition}.log",
        benchmark:
            "results/benchmarks/audio_index/{partition}.tsv"
        conda:
            "../../envs/medusa.yaml"
        params:
            # Names and content of the partition's files: not data.root, not their times.
            audio=audio_fingerprint,
        script:
            "../scripts/audio_index.py"


rule prepare:
    """Labels -> soft targets -> speaker-disjoint subsets -> manifest, plus a data report."""
    input:
        audio=labelled_audio_indexes,
    output:
        manifest=run_path("data/manifest.tsv"),
        report=report(
            run_path("data/report.md"),
            caption="../report/data.rst",
            category="Data",
        ),
    log:
        log_path("prepare.log"),
    benchmark:
        run_path("benchmarks/prepare.tsv")
    conda:
        "../../envs/medusa.yaml"
    params:
        data=prepare_params,
    script:
        "../scripts/prepare.py"
