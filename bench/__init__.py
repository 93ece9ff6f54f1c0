"""Benchmarks for aura-trio, side by side with an asyncio peer (issue 3).

`python -m bench run --target aura|peer|both` starts Redis, the server(s) and the
Trio load generator, runs the scenarios, and writes `bench/results/REPORT.md`.
"""
