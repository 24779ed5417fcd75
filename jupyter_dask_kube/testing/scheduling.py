"""What the node agent's scheduler decides, pure: the Nodes it registers, what a pod asks for, where it fits,
and the default scheduler's and cluster-autoscaler's words when it fits nowhere."""
from __future__ import annotations

import dataclasses
import datetime

from ..quantities import parse_quantity

__all__ = ["NodeSpec", "parse_node", "pod_requests", "choose_node", "now_iso", "service_environment"]


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass
class NodeSpec:
    name: str = "emulated-node-1"
    cpu: str = "64"
    memory: str = "256Gi"
    pods: int = 500
    labels: dict = dataclasses.field(default_factory=dict)

    @property
    def cpu_cores(self) -> float:
        return parse_quantity(self.cpu)

    @property
    def memory_bytes(self) -> float:
        return parse_quantity(self.memory)

    def all_labels(self) -> dict:
        return {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                **self.labels}

    def manifest(self, kubelet_port: int) -> dict:
        """The Node a kubelet registers: capacity, InternalIP 127.0.0.1 (the API server reaches the kubelet's
        HTTPS port there for logs), Ready."""
        capacity = {"cpu": str(self.cpu), "memory": str(self.memory), "pods": str(self.pods),
                    "ephemeral-storage": "100Gi"}
        return {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.name, "labels": self.all_labels()},
            "spec": {},
            "status": {
                "capacity": capacity, "allocatable": dict(capacity),
                "conditions": [ready_condition()],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                              {"type": "Hostname", "address": self.name}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
                "nodeInfo": {"kubeletVersion": "v1.20.2-jdk-node-agent", "kubeProxyVersion": "v1.20.2-jdk-node-agent",
                             "operatingSystem": "linux", "architecture": "amd64", "machineID": "", "systemUUID": "",
                             "bootID": "", "kernelVersion": "", "osImage": "local processes",
                             "containerRuntimeVersion": "local-processes://1"},
            },
        }


def ready_condition() -> dict:
    now = now_iso()
    return {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
            "lastHeartbeatTime": now, "lastTransitionTime": now}


def parse_node(text: str, index: int = 1) -> NodeSpec:
    """``"cpu=64,memory=256Gi,pods=500,name=n1,label.zone=a"`` -> NodeSpec."""
    node = NodeSpec(name=f"emulated-node-{index}")
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        if key == "cpu":
            node.cpu = value
        elif key == "memory":
            node.memory = value
        elif key == "pods":
            node.pods = int(value)
        elif key == "name":
            node.name = value
        elif key.startswith("label."):
            node.labels[key[6:]] = value
        else:
            raise ValueError(f"unknown node field {key!r} in {text!r}")
    parse_quantity(node.cpu), parse_quantity(node.memory)  # refuse a bad quantity now, not at scheduling
    return node


def pod_requests(pod: dict) -> tuple[float, float]:
    """(cpu cores, memory bytes) the scheduler accounts for: the sum over containers, at least the largest
    init container; a resource with a limit and no request requests its limit."""
    spec = pod.get("spec") or {}

    def req(c):
        r = c.get("resources") or {}
        vals = {**(r.get("limits") or {}), **(r.get("requests") or {})}
        return parse_quantity(vals.get("cpu")), parse_quantity(vals.get("memory"))

    cpu = mem = 0.0
    for c in spec.get("containers") or []:
        a, b = req(c)
        cpu, mem = cpu + a, mem + b
    for c in spec.get("initContainers") or []:
        a, b = req(c)
        cpu, mem = max(cpu, a), max(mem, b)
    return cpu, mem


def _misfits(pod: dict, node: NodeSpec, used: tuple[float, float, int]) -> list[str]:
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    labels = node.all_labels()
    if any(labels.get(k) != v for k, v in selector.items()):
        return ["node(s) didn't match node selector"]
    cpu, mem = pod_requests(pod)
    out = []
    if used[2] + 1 > node.pods:
        out.append("Too many pods")
    if used[0] + cpu > node.cpu_cores + 1e-9:
        out.append("Insufficient cpu")
    if used[1] + mem > node.memory_bytes:
        out.append("Insufficient memory")
    return out


def choose_node(pod: dict, nodes: list[NodeSpec], used: dict[str, tuple[float, float, int]]) -> tuple[NodeSpec | None, str]:
    """The first node the pod fits on, or None and the default scheduler's message, e.g.
    ``0/1 nodes are available: 1 Insufficient cpu.``"""
    reasons: dict[str, int] = {}
    for node in nodes:
        fails = _misfits(pod, node, used.get(node.name, (0.0, 0.0, 0)))
        if not fails:
            return node, ""
        for f in fails:
            reasons[f] = reasons.get(f, 0) + 1
    detail = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
    return None, f"0/{len(nodes)} nodes are available: {detail}."


def fits_empty(pod: dict, node: NodeSpec) -> list[str]:
    """Why the pod would not fit even on a new, empty node like ``node`` (empty: it would fit)."""
    return _misfits(pod, node, (0.0, 0.0, 0))


def service_environment(services: list[dict], namespace: str, enable_service_links: bool) -> list[dict]:
    """The variables a kubelet gives a pod for Services (docker-link style), as ``env`` entries, before the
    container's own: every Service of the pod's namespace when ``enableServiceLinks`` (the default), and the
    API server's ``kubernetes`` Service of ``default`` always."""
    env: dict[str, str] = {}
    chosen = {}
    for svc in services:
        meta, spec = svc["metadata"], svc.get("spec") or {}
        ip = spec.get("clusterIP")
        if not ip or ip == "None":
            continue
        ns, name = meta.get("namespace"), meta["name"]
        if (ns == namespace and enable_service_links) or (ns == "default" and name == "kubernetes"):
            if name not in chosen or ns == namespace:
                chosen[name] = svc
    for name in sorted(chosen):
        spec = chosen[name]["spec"]
        ip, ports = spec["clusterIP"], spec.get("ports") or []
        prefix = name.upper().replace("-", "_")
        env[f"{prefix}_SERVICE_HOST"] = ip
        if not ports:
            continue
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        for p in ports:
            if p.get("name"):
                env[f"{prefix}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = str(p["port"])
        first = ports[0]
        env[f"{prefix}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
        for p in ports:
            proto = p.get("protocol", "TCP")
            base = f"{prefix}_PORT_{p['port']}_{proto.upper()}"
            env[base] = f"{proto.lower()}://{ip}:{p['port']}"
            env[f"{base}_PROTO"] = proto.lower()
            env[f"{base}_PORT"] = str(p["port"])
            env[f"{base}_ADDR"] = ip
    return [{"name": k, "value": v} for k, v in env.items()]
