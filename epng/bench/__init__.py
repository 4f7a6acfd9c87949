"""Benchmarks: model speed/FLOPs/memory (`model_bench`), data-loader speed (`loader_bench`),
shared timing utilities (`harness`).  Command line: `epng bench`."""
