"""Deep frame classifiers over pdf ids: device-side context windows (frames), architectures
(models), a resumable trainer with a loss hook for distillation (train), stacked ensembles
(ensemble) and log-likelihoods / frame metrics for decoding and reports (infer)."""
