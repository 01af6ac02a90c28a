"""`wsss-tune`'s command line: the parser and its commands (demo, maintenance)."""
