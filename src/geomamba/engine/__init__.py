"""Engine: run config (``config``), LightningModule (``module``), DataModule (``datamodule``), callbacks
and figures, sliding-window inference (``inference``), training/testing runs (``train``) and prediction
over files or folders (``predict``). Import from the modules, e.g.
``from geomamba.engine.train import train``.
"""
