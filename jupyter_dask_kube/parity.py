"""Environment parity: under JupyterHub the built-in templates run the user's own image (pure).

kubespawner passes the notebook's image as ``JUPYTER_IMAGE_SPEC`` (and ``JUPYTER_IMAGE``); workers made from
it have the notebook's packages, so the version-mismatch warning (manager._check_versions) stays quiet unless
something really differs. Admin templates keep their images: the admin chose them.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping

from .templates import ClusterTemplate


def notebook_image(env: Mapping | None = None) -> str | None:
    env = os.environ if env is None else env
    return (env.get("JUPYTER_IMAGE_SPEC") or env.get("JUPYTER_IMAGE") or "").strip() or None


def with_image(template: ClusterTemplate, image: str) -> ClusterTemplate:
    """The template with every container of its pods running ``image`` (an ``image`` option defaults to it)."""
    worker, scheduler = copy.deepcopy(template.worker), copy.deepcopy(template.scheduler)
    for pod in (worker, scheduler):
        for c in (pod or {}).get("spec", {}).get("containers") or []:
            c["image"] = image
    options = copy.deepcopy(template.options)
    for o in options:
        if o.name == "image" and (not o.choices or image in o.choices):
            o.default = image
    return dataclasses.replace(template, worker=worker, scheduler=scheduler, options=options)
