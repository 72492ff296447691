"""nurture's benchmarks: the send pipeline, the tick and rendering. ``python -m bench --help``;
bench/README.md says what each number means."""
