"""lorapipe: from a task description and raw inputs to a deployed, versioned LoRA adapter."""

from lorapipe.config import PipelineConfig, load_config
from lorapipe.errors import (
    ConfigError,
    DataError,
    LorapipeError,
    ModelError,
    RegistryError,
    ServeError,
    TeacherError,
)

__version__ = "0.1.0"
__all__ = ["PipelineConfig", "load_config", "LorapipeError", "ConfigError", "DataError", "ModelError",
           "TeacherError", "RegistryError", "ServeError", "__version__"]
