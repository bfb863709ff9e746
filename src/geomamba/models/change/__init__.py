"""Change models."""
