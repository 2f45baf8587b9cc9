"""Backends: the one seam between glmrun and a model. See `base.Backend`."""
