"""geomamba: remote-sensing change detection and segmentation with Mamba hybrid networks."""

from geomamba.models import create_model, list_models, register_model

__version__ = "0.1.0"
__all__ = ["__version__", "create_model", "list_models", "register_model"]
