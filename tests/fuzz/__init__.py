"""Property-based fuzz tests (hypothesis) of every RPC of every service and of the gateway, on real processes.

Each server starts once for the package. By default the examples are derandomised (the same ones every run) and
bounded so that the package takes well under two minutes on two shared cores. For a deeper search:

    MODELYARD_FUZZ_SEARCH=1 MODELYARD_FUZZ_SCALE=10 .venv/bin/pytest tests/fuzz --hypothesis-show-statistics

(new random examples each run, ten times as many; the statistics list which answers the examples reached).
"""
