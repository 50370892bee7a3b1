"""YAML run configurations."""
from .runner import build_model, load_data, train, training_callbacks
from .schema import SCHEMA, ConfigError, load_config, validate_config

__all__ = ["SCHEMA", "ConfigError", "build_model", "load_config", "load_data", "train", "training_callbacks", "validate_config"]
