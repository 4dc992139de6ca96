"""MEDUSA speech emotion recognition: the library behind the Snakemake workflow.

Stage modules (data, asr, features, training, ensemble, report) use the shared pieces
(emotions, manifest, atomic, audio, store, model, sampling, metrics, devices) and never each
other's internals. Nothing here imports Snakemake.
"""

__version__ = "0.1.0"
