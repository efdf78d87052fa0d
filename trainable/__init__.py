"""tricktune's training side: plain PyTorch, no Ray, Optuna or MLflow imports."""

from trainable.config import REPORTED_METRICS, ConfigError, TrainConfig, from_dict, to_dict

__all__ = ["TrainConfig", "ConfigError", "from_dict", "to_dict", "REPORTED_METRICS"]
