"""The thin Ray Tune + Optuna + MLflow layer around ``trainable.fit``.

Nothing here starts Ray at import time; ``python -m search`` is the entry point.
"""
