"""geomamba: remote-sensing change detection and segmentation with Mamba hybrid networks."""

from geomamba.models import create_model, list_models, register_model
from geomamba.models.summary import ModelSummary, summary

__version__ = "0.1.0"
__all__ = ["ModelSummary", "__version__", "create_model", "list_models", "register_model", "summary"]
