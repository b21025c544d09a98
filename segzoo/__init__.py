"""segzoo: Fully Convolutional Networks as a plugin-based model zoo.

The flow, one folder each: ``core`` (the contracts) → ``zoo`` (the registry, filled by plugins) →
``api`` (names to models, with their weights; ``io`` reads and writes the files) → ``train`` /
``infer`` → ``studies`` (ablate, bench) → ``cli``. What plugin authors use is importable from here.
"""

from ._version import __version__
from .api import (
    build,
    convert,
    create_model,
    from_pretrained,
    get_registry,
    list_backbones,
    list_heads,
    list_models,
    list_presets,
    load_model,
    save_model,
)
from .core.batch import Batch, Window
from .core.errors import (
    CheckpointError,
    DataError,
    GeometryError,
    InputError,
    PluginError,
    SegzooError,
    TrainingError,
    UnknownNameError,
)
from .core.hookspecs import hookimpl
from .core.model import (
    CAFFE_NORM,
    GEOMETRIES,
    IMAGENET_NORM,
    Backbone,
    FeatureInfo,
    Head,
    SegmentationModel,
    Strides,
)
from .core.recipe import Preset, Recipe, WeightLayout
from .io.cache import hf_hub_file, torch_hub_file
from .io.checkpoint import read_state_dict, read_weights_file
from .io.hub import push_to_hub, save_pretrained
from .io.weights import build_convolutionalized, check_fits, load_classifier_weights, load_fitting
from .zoo.check import assert_plugin_passes
from .zoo.contract import assert_contract, run_contract

__all__ = [
    "__version__",
    "CAFFE_NORM", "GEOMETRIES", "IMAGENET_NORM", "Backbone", "Batch", "CheckpointError", "DataError", "FeatureInfo",
    "GeometryError", "Head", "InputError", "PluginError", "Preset", "Recipe", "SegmentationModel", "SegzooError",
    "Strides", "TrainingError", "UnknownNameError", "WeightLayout", "Window", "assert_contract",
    "assert_plugin_passes", "build", "check_fits", "convert", "create_model", "from_pretrained", "get_registry",
    "hf_hub_file", "hookimpl", "list_backbones", "list_heads", "list_models", "list_presets",
    "load_classifier_weights", "build_convolutionalized", "load_fitting", "load_model", "push_to_hub",
    "save_pretrained",
    "read_state_dict", "read_weights_file", "run_contract", "save_model", "torch_hub_file",
]
