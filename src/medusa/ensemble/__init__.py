"""The ensemble (docs/method.md, section 6): the DeepSER models' posteriors, the voting
baselines (``votes``), the stage-3 meta-classifier (``meta``, trained by ``meta_training``,
its prior strength chosen by ``meta_cv``) and the stage-4 soup (``soup``).

Every DeepSER model leaves, per subset, C class posteriors (the run's class set, recorded in the
file's ``classes`` attribute; MSP-Podcast's 8 by default) and 3 attributes per clip
(``results/posteriors/{model}.h5``, one group per subset with ``ids``, ``probs`` [N, C],
``attributes`` [N, 3]). Here:

- the vote baselines combine the posteriors directly (majority vote, soft vote);
- stage 3 trains a small head on the concatenated outputs (K models x 11 numbers), starting
  at the product-of-experts vote, with a class-balanced loss, once per seed on that seed's
  bootstrap resample of the meta-classifier's clips (``train_meta``, ``fit_head``), with the
  prior strength (or "stay at the vote") that ``medusa.ensemble.meta_cv`` chose by cross-validation;
- stage 4 averages the seeds' weights into one head, the soup (``make_soup``), which writes
  the challenge predictions for the unlabelled ``test`` clips (``predict_test``).

Scoring follows the challenge: the truth is the consensus letter, only the 8 emotion classes
count (X/O and unlabelled clips are left out), macro-F1 first. The "balanced holdout" scores
every 8-class clip of the selection holdout, each weighted by 1 / its class's count
(``classification_metrics(balanced=True)``). By default the head trains on the `meta` subset,
which shares no speaker with the selection holdout; the holdout views are still selection-biased
(every model's checkpoint was chosen on it), so dev is the evaluation. With `train_on: holdout`
(the paper's way) the holdout views are in-sample and say so.

The head is tiny, so it always runs on the CPU; one seed trains in seconds.
"""
