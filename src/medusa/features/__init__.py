"""Features (docs/method.md, section 3): per-frame layer embeddings of each backbone, into HDF5."""
