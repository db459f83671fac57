"""Run configuration: typed dataclasses, the flavor registry, YAML loading, layout checks."""

from megacode.config.flavors import CUSTOM, FLAVORS, Flavor, check_shape, get_flavor, model_shape, rope_base
from megacode.config.layout import Layout, resolve_layout
from megacode.config.loader import config_from_dict, load_config
from megacode.config.schema import (
    CheckpointConfig,
    ConfigError,
    DataConfig,
    FimConfig,
    LoggingConfig,
    ModelConfig,
    OptimConfig,
    ParallelConfig,
    ProfileConfig,
    RunConfig,
    ScheduleConfig,
    ShapeConfig,
    TrainConfig,
    check_schedule,
)

__all__ = [
    "CUSTOM", "FLAVORS", "Flavor", "check_shape", "get_flavor", "model_shape", "rope_base", "Layout", "resolve_layout",
    "config_from_dict", "load_config",
    "CheckpointConfig", "ConfigError", "DataConfig", "FimConfig", "LoggingConfig", "ModelConfig",
    "OptimConfig", "ParallelConfig", "ProfileConfig", "RunConfig", "ScheduleConfig", "ShapeConfig", "TrainConfig", "check_schedule",
]
