"""DeepSER and its two-stage training (docs/method.md, sections 4 and 5): the model, stage 1 and
stage 2, checkpoints and resume state, and each model's posteriors."""
