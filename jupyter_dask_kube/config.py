"""Dask config defaults for the ``kubernetes.*`` keys, loaded once on import."""
import os

import dask.config
import yaml

_fn = os.path.join(os.path.dirname(__file__), "kubernetes.yaml")
with open(_fn) as f:
    defaults = yaml.safe_load(f)

dask.config.update_defaults(defaults)
