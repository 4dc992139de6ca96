"""Evaluation (docs/method.md, section 7): every figure with its interval, calibration and
temperature scaling, the report, and the evidence beyond clean dev (robustness under perturbed
audio)."""
