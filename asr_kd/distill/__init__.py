"""Distillation (Hinton, Vinyals & Dean 2015): a teacher's soft targets train a student frame classifier.

losses.py (named loss terms, LossConfig), teachers.py (online teachers, arith/geo combination),
cache.py (per-utterance teacher caches with checked meta), distill.py (the `distill` API, transfer
sets), experiments.py (temperature sweep, §6 regularizer experiment), commands.py (CLI).
"""
