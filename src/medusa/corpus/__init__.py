"""Data (docs/method.md, section 1): the corpus read, never written; its audio partitions, labels,
soft targets, speaker-disjoint subsets and folds, into the manifest every later stage reads."""
