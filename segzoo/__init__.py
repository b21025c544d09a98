"""segzoo: Fully Convolutional Networks as a plugin-based model zoo."""

from .api import create_model, get_registry, list_backbones, list_heads, list_models
from .checkpoint import load_model, save_model
from .errors import CheckpointError, DataError, InputError, PluginError, SegzooError, TrainingError, UnknownNameError
from .hookspecs import hookimpl
from .model import Backbone, FeatureInfo, Head, SegmentationModel

__version__ = "0.1.0"

__all__ = [
    "Backbone", "CheckpointError", "DataError", "FeatureInfo", "Head", "InputError", "PluginError", "SegmentationModel",
    "SegzooError", "TrainingError", "UnknownNameError", "create_model", "get_registry", "hookimpl", "list_backbones",
    "list_heads", "list_models", "load_model", "save_model",
]
