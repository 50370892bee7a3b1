"""YAML run configurations."""
from .runner import build_model, load_data, train
from .schema import SCHEMA, ConfigError, load_config, validate_config

__all__ = ["SCHEMA", "ConfigError", "build_model", "load_config", "load_data", "train", "validate_config"]
