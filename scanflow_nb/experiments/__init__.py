"""The experiment side run through the engine: re-running a recorded run, parameter sweeps and searches.

(What only reads MLflow, the history and comparisons, lives in `track/`.)
"""
