# Evidence beyond the clean dev set (target `evidence`, never part of `soup`): Table R, Table C
# and every cross-corpus evaluation in one document, each with what it does and does not show
# (src/medusa/evidence.py).


rule evidence:
    """Robustness, calibration and cross-corpus figures with their captions, and the soup
    against the best single model, derived from the tables."""
    input:
        unpack(evidence_inputs),
    output:
        report(
            run_path("report/evidence.md"),
            caption="../report/evidence.rst",
            category="Evidence",
        ),
    log:
        log_path("report/evidence.log"),
    conda:
        "../../envs/medusa.yaml"
    script:
        "../scripts/evidence.py"
