"""ASR (docs/method.md, section 2): Whisper transcripts of every clip of an audio partition."""
