"""Step identity, one writer per output, tree identity: what makes a re-run safe.

- `identity`: the fingerprint of a step (resolved config, options, identities of its input
  stores and models) and the names of what changed between two fingerprints.
- `outputs`: `claim_output(out, fingerprint, overwrite)` - lock an output, then skip (finished,
  same fingerprint), resume (killed, same fingerprint), refuse (different) or replace (--overwrite).
- `lock`: a lock file per output / exp dir recording the holder's PID and command.
- `tree`: every alignment, log-likelihood store, model and teacher cache records the sha256 of the
  decision tree its pdf ids come from; consumers refuse a mismatch.
- `recipe` (`python -m asr_kd.steps`): the same for recipe markers and the exp-dir lock.

This package sits below every stage (it imports only `asr_kd.io`, `asr_kd.errors`,
`asr_kd.config`), so each stage can use it.
"""
