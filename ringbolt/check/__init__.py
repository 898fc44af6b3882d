"""Checkers that sit outside the replicas: record what clients saw, then judge it.

- `history`: the JSON-lines history format and the `History` recorder.
- `models`: sequential specifications (register, cas-register).
- `linearizability`: `check_history`, a per-key WGL search.
- `generate`: linearizable-by-construction histories for tests and benchmarks.
- `cli`: `ringbolt check HISTORY`.

docs/history-format.md is the reference for the format and the verdicts.
"""
