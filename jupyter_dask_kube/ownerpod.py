"""The notebook pod this Jupyter server runs in: what each scheduler pod is owned by, so the clusters go
when the hub stops or culls the server (Kubernetes' garbage collector does it, not this process).

Which pod: ``c.DaskKube.owner_pod`` = ``"auto"`` (the default) takes ``POD_NAME`` (the downward API, set by
deploy/z2jh-values.yaml), else ``HOSTNAME`` when running in a Kubernetes pod (a pod's hostname is its name
unless its spec sets one); ``""`` turns it off; any other value is the pod's name. The namespace is
``POD_NAMESPACE``, else the service account's. An ownerReference cannot cross namespaces (the collector
would delete the dependent at once), so a pod in another namespace is refused with that reason.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

from .runtimes import PodRuntime, RuntimeAPIError
from .runtimes.kubernetes import SERVICE_ACCOUNT_DIR

AUTO = "auto"


class OwnerPodError(Exception):
    """The notebook pod cannot own clusters; the message says why and what to do."""


def owner_pod_name(setting: str | None, env: Mapping | None = None) -> str | None:
    """The owner pod's name from the setting and the environment (pure), None when off / not in a pod."""
    env = os.environ if env is None else env
    if setting is None or setting == AUTO:
        if env.get("POD_NAME"):
            return env["POD_NAME"]
        if env.get("KUBERNETES_SERVICE_HOST") and env.get("HOSTNAME"):
            return env["HOSTNAME"]
        return None
    return setting.strip() or None


def owner_pod_namespace(env: Mapping | None = None) -> str | None:
    env = os.environ if env is None else env
    if env.get("POD_NAMESPACE"):
        return env["POD_NAMESPACE"]
    try:
        with open(os.path.join(SERVICE_ACCOUNT_DIR, "namespace")) as f:
            return f.read().strip() or None
    except OSError:
        return None


async def find_owner_pod(runtime: PodRuntime, name: str, namespace: str | None = None) -> dict:
    """The notebook pod, alive, in the clusters' namespace; else OwnerPodError with the reason."""
    if namespace and namespace != runtime.namespace:
        raise OwnerPodError(
            f"your server's pod {name} is in namespace {namespace} but clusters are made in {runtime.namespace}; "
            "an ownerReference cannot cross namespaces. Ask your admin to set c.DaskKube.owner_pod = '' "
            "(clusters then end by max_lifetime only) or to use one namespace"
        )
    try:
        pod = await runtime.read_pod(name)
    except RuntimeAPIError as exc:
        raise OwnerPodError(f"cannot read your server's pod {name} in namespace {runtime.namespace}: "
                            f"{exc.reason}: {exc.message}") from None
    if pod is None:
        raise OwnerPodError(
            f"your server's pod {name} was not found in namespace {runtime.namespace}, so a cluster could not "
            "follow your server; set c.DaskKube.owner_pod to the pod's name (or POD_NAME from the downward API)"
        )
    if pod["metadata"].get("deletionTimestamp"):
        raise OwnerPodError(f"your server's pod {name} is being deleted: the server is stopping")
    if not pod["metadata"].get("uid"):
        raise OwnerPodError(f"your server's pod {name} has no uid in the API's answer")
    return pod
