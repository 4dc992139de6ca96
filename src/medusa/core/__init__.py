"""Shared plumbing every stage uses: atomic writes, checksums, configuration, the class set, the
manifest, metrics, audio input, HDF5 frame stores, model fetching and devices. Nothing here
belongs to one stage of the method (docs/method.md)."""
