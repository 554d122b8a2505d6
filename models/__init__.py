"""Model registry (``harness.models``): the Wu 2020 classifiers and the Faster R-CNN detectors.

Usage::

    from harness.models import create_model, list_models

    list_models(task="classification")  # ['wu2020', 'wu2020_hybrid']
    model = create_model("wu2020", weights="imagenet", backbone="resnet18")
    detector = create_model("fasterrcnn_vgg16", num_classes=6, min_size=256, max_size=256)

Every model module is imported below, explicitly: importing the package registers every name, so a name can never
be "not found" because its module happened not to be imported yet. The builders themselves stay in their modules
(``harness.models.wu2020.wu2020``...): re-exporting ``wu2020`` here would hide the module of the same name.
"""

from . import detectors, wu2020  # noqa: F401  (registration happens on import)
from .backbones import CLASSIFIER_BACKBONES
from .registry import (
    TASKS,
    WEIGHT_KWARGS,
    UnknownModelError,
    check_model_kwargs,
    create_model,
    list_models,
    model_signature,
    model_task,
    register_model,
)
from .weights import WeightsError, imagenet_cache_dir, imagenet_file_names, resolve_weights
from .wu2020 import Wu2020, Wu2020Hybrid

__all__ = [
    "CLASSIFIER_BACKBONES",
    "TASKS",
    "WEIGHT_KWARGS",
    "UnknownModelError",
    "WeightsError",
    "Wu2020",
    "Wu2020Hybrid",
    "check_model_kwargs",
    "create_model",
    "imagenet_cache_dir",
    "imagenet_file_names",
    "list_models",
    "model_signature",
    "model_task",
    "register_model",
    "resolve_weights",
]
