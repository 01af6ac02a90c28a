"""wsss-tune: hyperparameter searches over the whole WSSS pipeline, driving it only through `wsss`.

    spaces     search-space YAML files -> validated, define-by-run Optuna spaces
    search     Ray Tune Tuner + OptunaSearch (TPE) + ASHA at stage boundaries; resume
    searcher   OptunaSearch that tells Optuna PRUNED for trials stopped between stages
    trainable  one trial: a full pipeline, reported per stage, logged to MLflow from the worker
    tracking   MLflow parent/child runs and the driver-side callback that settles their status
    locks      single-flight leases across a Ray cluster (for stores without file locks)
    results    leaderboards and config export, read from MLflow
    demo, cli  `wsss-tune demo` and the command line

Submodules are imported on use: Ray and MLflow are heavy, and `wsss-tune spaces check` needs neither.
"""
