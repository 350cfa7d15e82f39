"""Decode stage: HCLG graphs, decoding log-likelihood matrices to words, WER scoring."""
