"""Secret volumes for pods run as local processes: what a kubelet does when it mounts a ``secret`` volume.

One implementation for both places that run pods here (the local runtime and the test tiers' node agent, both
through :class:`~.localpod.LocalPodRunner`): read each Secret a pod mounts, write its keys as files only this
user can read (directories 0700, files 0600: other users share this machine), and tell where they are.

Processes share one filesystem, so a container cannot see the files at its ``mountPath`` (``/etc/dask-tls``):
instead, container variables and arguments that name a path under a mount path are rewritten to the pod's
own directory (:func:`rewrite`). That is the stand-in for a container's mount namespace; a program that builds
such paths itself (not from its variables or arguments) would not find them.

A Secret that is not there (yet) is a :class:`MountError` with the kubelet's words (FailedMount): the runner
keeps the pod waiting in ContainerCreating and tries again, as a kubelet does; a pod whose Secret is created
just after it (the cluster's order: pod, then the Secret owned by it) starts as soon as the Secret exists.
"""
from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Awaitable, Callable

#: ``read_secret(namespace, name)``: the Secret as Kubernetes JSON, None when it does not exist.
SecretReader = Callable[[str, str], Awaitable[dict | None]]


class MountError(Exception):
    """A volume cannot be set up (the kubelet's FailedMount): the message is the kubelet's."""


def secret_volumes(pod: dict) -> list[dict]:
    """The pod's volumes of type ``secret``."""
    return [v for v in (pod.get("spec") or {}).get("volumes") or [] if isinstance(v.get("secret"), dict)]


def _files(volume: dict, secret: dict) -> dict[str, bytes]:
    """Relative path -> content, as the kubelet projects a Secret (``items`` select and rename keys)."""
    data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    data.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
    items = volume["secret"].get("items")
    if not items:
        return data
    out = {}
    for item in items:
        key, path = item.get("key"), item.get("path") or item.get("key")
        if key not in data:
            if volume["secret"].get("optional"):
                continue
            raise MountError(f'MountVolume.SetUp failed for volume "{volume.get("name")}" : '
                             f'references non-existent secret key: {key}')
        out[path] = data[key]
    return out


def check_data(secret: dict) -> None:
    """ValueError unless every ``data`` value is base64 text (what the API server validates)."""
    data = secret.get("data") or {}
    if not isinstance(data, dict):
        raise ValueError("data must map keys to base64 strings")
    for key, value in data.items():
        try:
            base64.b64decode(value, validate=True)
        except (ValueError, TypeError):
            raise ValueError(f"data[{key}]: illegal base64 data") from None


def write_files(directory: str, files: dict[str, bytes]) -> None:
    """Write ``files`` under ``directory`` (made 0700), each 0600; paths may not leave the directory."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    root = os.path.realpath(directory)
    for rel, content in files.items():
        target = os.path.realpath(os.path.join(root, rel))
        if os.path.commonpath([root, target]) != root or target == root:
            raise MountError(f"invalid secret item path {rel!r}")
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        # O_EXCL on a fresh name, then rename: never writes through a link someone placed there
        tmp = f"{target}.tmp-{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(tmp, target)


def write_secret(directory: str, secret: dict) -> None:
    """All keys of ``secret`` as owner-only files in ``directory``."""
    write_files(directory, _files({"name": "", "secret": {}}, secret))


async def materialize(pod: dict, read_secret: SecretReader, pod_dir: str) -> dict[str, dict[str, str]]:
    """Write every secret volume of ``pod`` under ``pod_dir``; for each container, its mount paths -> the
    directories that stand in for them (for :func:`rewrite`).

    Raises :class:`MountError` (nothing is left half-written for the caller to use) when a Secret is missing
    or unreadable."""
    import asyncio

    ns = (pod.get("metadata") or {}).get("namespace") or "default"
    by_volume: dict[str, str] = {}
    for vol in secret_volumes(pod):
        name = vol["secret"].get("secretName") or ""
        try:
            secret = await read_secret(ns, name)
        except Exception as exc:  # noqa: BLE001 (the API's refusal, worded for the pod's status)
            raise MountError(f'MountVolume.SetUp failed for volume "{vol.get("name")}" : '
                             f'cannot read secret "{name}": {exc}') from None
        if secret is None:
            if vol["secret"].get("optional"):
                secret = {}
            else:
                raise MountError(f'MountVolume.SetUp failed for volume "{vol.get("name")}" : '
                                 f'secret "{name}" not found')
        directory = os.path.join(pod_dir, "volumes", vol.get("name") or name)
        await asyncio.to_thread(write_files, directory, _files(vol, secret))
        by_volume[vol.get("name")] = directory
    mounts: dict[str, dict[str, str]] = {}
    for c in (pod.get("spec") or {}).get("containers") or []:
        mine = mounts.setdefault(c.get("name") or "main", {})
        for m in c.get("volumeMounts") or []:
            directory = by_volume.get(m.get("name"))
            if directory and m.get("mountPath"):
                sub = m.get("subPath") or ""
                mine[m["mountPath"].rstrip("/") or "/"] = os.path.join(directory, sub) if sub else directory
    return mounts


def rewrite(value: str, mounts: dict[str, str]) -> str:
    """``value`` with a leading mount path (``/etc/dask-tls/ca.crt``, ``--tls-ca-file=/etc/dask-tls/ca.crt``)
    replaced by the directory that stands in for it."""
    if not mounts or not isinstance(value, str) or "/" not in value:
        return value
    prefix, sep, path = value.partition("=") if value.startswith("-") and "=" in value else ("", "", value)
    for mount in sorted(mounts, key=len, reverse=True):  # the most specific mount first
        if path == mount or path.startswith(mount + "/"):
            return prefix + sep + mounts[mount] + path[len(mount):]
    return value


def remove(pod_dir: str | None) -> None:
    if pod_dir:
        shutil.rmtree(pod_dir, ignore_errors=True)
