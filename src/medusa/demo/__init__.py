"""Offline demo assets: a synthetic MSP-Podcast-layout corpus (espeak-ng speech) and tiny backbones."""
