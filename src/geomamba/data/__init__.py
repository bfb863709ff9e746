"""Data: file I/O (``io``), dataset layout (``layout``), label rules (``labels``), the validation pass
(``validate``), datasets (``datasets``), augmentation (``transforms``) and synthetic scenes
(``synthetic``). Import from the modules, e.g. ``from geomamba.data.validate import validate_dataset``.
"""
