"""The ensemble (docs/method.md, section 6): the models' posteriors, the voting baselines, the
stage-3 meta-classifier with its self-validation, and the stage-4 model soup."""
