"""Corpus preparers: one module per corpus, each writing Kaldi data dirs and a dict dir (see common.py)."""
