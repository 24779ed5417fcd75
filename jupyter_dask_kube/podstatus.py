"""Why a pod is not running, in one line a notebook user can act on.

Reads the ``status`` of a Pod dict (Kubernetes JSON form, as the API or the local kubelet
reports it) and picks the most telling reason: a pod-level reason (Evicted), a container
waiting (ImagePullBackOff) or terminated (OOMKilled) state, else the scheduler's
(Unschedulable). Pure functions, no client models.
"""
from __future__ import annotations

LABEL_COMPONENT = "dask.org/component"  # same key as objects.LABEL_COMPONENT

#: Waiting reasons that are a normal part of starting up, not a problem.
BENIGN_REASONS = frozenset({"", "ContainerCreating", "PodInitializing", "Completed"})
#: Reasons the pod will not get past without someone changing something.
STUCK_REASONS = frozenset({
    "Unschedulable", "ImagePullBackOff", "ErrImagePull", "ErrImageNeverPull", "InvalidImageName",
    "CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError",
})
#: Reasons that can end without anyone acting: Kubernetes keeps retrying, and a node may be added (cluster
#: autoscaler, Karpenter, GKE Autopilot take minutes). A pod waits with its reason shown, up to the start timeout.
WAITING_REASONS = frozenset({"Unschedulable"})
#: Event reasons that end such a wait at once: the autoscaler says no node it can add would fit the pod.
FINAL_EVENT_REASONS = frozenset({"NotTriggerScaleUp"})
_ROLES = {"scheduler": "scheduler", "worker": "worker", "dask-scheduler": "scheduler", "dask-worker": "worker"}


def _get(d: dict | None, *keys, default=None):
    for key in keys:
        if not isinstance(d, dict):
            return default
        d = d.get(key)
    return default if d is None else d


def pod_role(pod: dict) -> str:
    """scheduler, worker or other, from the ``dask.org/component`` label."""
    return _ROLES.get(_get(pod, "metadata", "labels", LABEL_COMPONENT, default=""), "other")


def _statuses(pod: dict) -> list[tuple[str, dict]]:
    status = _get(pod, "status", default={})
    out = [("init container", s) for s in status.get("initContainerStatuses") or []]
    return out + [("container", s) for s in status.get("containerStatuses") or []]


def _image_of(pod: dict, name: str) -> str:
    spec = _get(pod, "spec", default={})
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        if c.get("name") == name:
            return c.get("image") or ""
    return ""


def _terminated_message(what: str, name: str, t: dict) -> str:
    reason, code = t.get("reason") or "", t.get("exitCode")
    code_text = f"exit code {code}" if code is not None else "no exit code"
    if reason == "OOMKilled":
        return f"{what} {name} was killed for using more memory than its limit ({code_text})"
    if reason in ("StartError", "ContainerCannotRun") and t.get("message"):
        return t["message"].strip()
    if t.get("message"):
        return f"{what} {name} exited with code {code}: {t['message'].strip()}"
    return f"{what} {name} exited with code {code}" if code is not None else f"{what} {name} terminated"


def _waiting(pod: dict, bad: bool) -> tuple[str, str] | None:
    for what, s in _statuses(pod):
        w = _get(s, "state", "waiting")
        if w is None:
            continue
        reason = w.get("reason") or ""
        if (reason not in BENIGN_REASONS) != bad:
            continue
        message = (w.get("message") or "").strip()
        name = s.get("name", "?")
        if not message and reason in ("ImagePullBackOff", "ErrImagePull"):
            message = f'{what} {name} can not pull image "{s.get("image") or _image_of(pod, name)}"'
        last = _get(s, "lastState", "terminated")
        if last and reason == "CrashLoopBackOff":
            detail = f"last exit: {last.get('reason') or 'Error'}: {_terminated_message(what, name, last)}"
            message = f"{message}; {detail}" if message else detail
        return reason, message
    return None


def _terminated(pod: dict, failed: bool) -> tuple[str, str] | None:
    for what, s in _statuses(pod):
        t = _get(s, "state", "terminated")
        if t is None:
            continue
        reason = t.get("reason") or ("Completed" if t.get("exitCode") == 0 else "Error")
        if (reason != "Completed" or t.get("exitCode", 0) != 0) != failed:
            continue
        if reason == "Completed" and t.get("exitCode", 0) != 0:
            reason = "Error"
        return reason, _terminated_message(what, s.get("name", "?"), t)
    return None


def _unschedulable(pod: dict) -> tuple[str, str] | None:
    for cond in _get(pod, "status", "conditions", default=[]):
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return cond.get("reason") or "Unschedulable", (cond.get("message") or "").strip()
    return None


def pod_summary(pod: dict) -> dict:
    """``{"name", "role", "phase", "reason", "message"}``; reason and message empty when healthy.

    A pod-level reason (Evicted, NodeLost, DeadlineExceeded...) wins over container states:
    the kubelet sets it when it ended the whole pod, and the containers then only show its
    consequence (exit code 137, ContainerStatusUnknown).
    """
    status = _get(pod, "status", default={})
    phase = status.get("phase") or "Pending"
    if _get(pod, "metadata", "deletionTimestamp"):
        phase = "Terminating"
    found = None
    if status.get("reason"):
        found = status["reason"], (status.get("message") or "").strip()
    found = (
        found
        or _waiting(pod, bad=True)
        or _terminated(pod, failed=True)
        or _unschedulable(pod)
        or _waiting(pod, bad=False)
        or (_terminated(pod, failed=False) if phase in ("Succeeded", "Failed") else None)
    )
    reason, message = found or ("", "")
    if not reason and phase == "Failed":
        reason, message = "Failed", (status.get("message") or "the pod failed").strip()
    if not reason and phase == "Unknown":
        reason, message = "Unknown", "the pod's node does not report its state"
    return {
        "name": _get(pod, "metadata", "name", default=""),
        "role": pod_role(pod),
        "phase": phase,
        "reason": reason,
        "message": message,
    }


def pod_problem(pod: dict) -> str | None:
    """One readable line when the pod is stuck or failed; None for a healthy pod."""
    s = pod_summary(pod)
    if s["reason"] in BENIGN_REASONS:
        return None
    return f"{s['reason']}: {s['message']}" if s["message"] else s["reason"]


def is_terminal(pod: dict) -> bool:
    return _get(pod, "status", "phase") in ("Succeeded", "Failed")


def is_running(pod: dict) -> bool:
    return _get(pod, "status", "phase") == "Running" and not _get(pod, "metadata", "deletionTimestamp")


def is_stuck(pod: dict) -> bool:
    """Stuck: Kubernetes keeps retrying, but it will not start without a change
    (bigger nodes, a fixed image name, a fixed command, a missing secret)."""
    return pod_summary(pod)["reason"] in STUCK_REASONS


def is_waiting_for_node(pod: dict) -> bool:
    """Not placed on a node yet, for a reason a new node can end (see WAITING_REASONS)."""
    return pod_summary(pod)["reason"] in WAITING_REASONS and not is_terminal(pod)


def pod_failure(pod: dict) -> str | None:
    """``pod_problem`` unless the pod is only waiting for a node: what ends a start at once."""
    return None if is_waiting_for_node(pod) else pod_problem(pod)


def readable_problem(summary: dict) -> str:
    """One line that leads with the reason (a card cuts the end), then which pod:
    "Unschedulable: 0/1 nodes are available: 1 Insufficient cpu. (scheduler pod dask-alice-...-scheduler)";
    a pod waiting for a node reads "waiting for a node: 0/1 nodes are available: ... (worker pod ...)"."""
    reason, message = summary.get("reason") or "", summary.get("message") or ""
    if reason in WAITING_REASONS:
        text = f"waiting for a node: {message or reason}"
    else:
        text = f"{reason}: {message}" if message else reason
    role = summary.get("role")
    what = f"{role} pod" if role in ("scheduler", "worker") else "pod"
    return f"{text} ({what} {summary.get('name', '')})"


def final_event(events: list[dict]) -> str | None:
    """The newest event that ends a wait for a node (the autoscaler's NotTriggerScaleUp), as "Reason: message"."""
    final = [e for e in events if e.get("reason") in FINAL_EVENT_REASONS]
    if not final:
        return None
    newest = max(final, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    message = (newest.get("message") or "").strip()
    return f"{newest['reason']}: {message}" if message else newest["reason"]
