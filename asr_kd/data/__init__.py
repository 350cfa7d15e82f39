"""Data layer: Kaldi data dirs, audio reading, filterbank features, per-utterance stores."""
