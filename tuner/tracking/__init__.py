"""MLflow: runs and their status, the best-effort write queue, the database backup, leaderboards,
exports and the post-search analysis."""
