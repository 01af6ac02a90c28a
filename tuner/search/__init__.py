"""A search: the driver, the sampler and scheduler, the stage-aware searcher on the experiment's
Optuna study, how a search ends, and resuming it."""
