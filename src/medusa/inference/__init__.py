"""Using a trained MEDUSA (docs/method.md, section 7 and README): the portable bundle, `medusa
predict` on new recordings (segments, streamed audio, timelines) and `medusa evaluate` on
another labelled corpus."""
