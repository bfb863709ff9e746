"""Backbones models."""
