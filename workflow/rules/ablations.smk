rule table2:
    """The paper's Table 2: each ablated model against its five ablations, on dev."""
    input:
        unpack(table2_inputs),
    output:
        table2=report(
            run_path("report/table2.tsv"),
            caption="../report/table2.rst",
            category="Ablations",
        ),
    log:
        log_path("table2.log"),
    conda:
        "../../envs/medusa.yaml"
    params:
        ablations=ablations_params(),
        evaluation=evaluation_params(),
    script:
        "../scripts/table2.py"


rule ablations:
    """Target: Table 2 (trains the ablation models; the `soup` run never does)."""
    input:
        rules.table2.output,
