"""The replay (tabular) search benchmark: a factorial design of real pipelines recorded once
(tuner.replay.design, tests/benchmarks/record_replay.py), and search arms replayed on it with the
production decision code on a simulated clock (tuner.replay.simulate, tests/benchmarks/bench_replay.py).
search-review.md section 1.4 is the design it follows."""
