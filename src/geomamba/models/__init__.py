"""Models: the registry and the model families (change detection, segmentation, classification).

Modules inside ``change/``, ``segmentation/`` and ``classification/`` register themselves with
``@register_model`` and are imported on the first call to ``create_model`` or ``list_models``.
"""

from geomamba.models._registry import create_model, get_model_entry, list_models, register_model
from geomamba.models.base import as_logits, split_bitemporal

__all__ = [
    "as_logits",
    "create_model",
    "get_model_entry",
    "list_models",
    "register_model",
    "split_bitemporal",
]
