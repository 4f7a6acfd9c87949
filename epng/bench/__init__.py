"""Benchmarks (command line: `epng bench`).

Model speed, FLOPs and memory: `model_bench` (the phases) on `config` (what to measure),
`inputs` (model, batches, predictors), `measure` (inference timings, agreement, stages,
FLOPs), `memory` (CPU peak RSS in a fresh process), `train_step`, `results` (dataclasses
and their JSON) and `report` (markdown). Data-loader speed: `loader_bench`. Shared:
`harness` (timing, FLOPs, peak RSS, tables) and `machine` (what the figures ran on)."""
