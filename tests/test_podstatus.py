"""podstatus: realistic pod statuses (as kubelets report them) read as one actionable line."""
import copy

import pytest

from jupyter_dask_kube.podstatus import (
    is_running,
    is_stuck,
    is_terminal,
    pod_problem,
    pod_role,
    pod_summary,
)

T = "2026-05-01T10:00:00Z"


def make_pod(phase=None, containers=None, conditions=None, component="worker", name="dask-a-1-worker-ab1cd",
             init=None, deleting=False, **status):
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"dask.org/component": component} if component else {}},
        "spec": {"containers": [{"name": "dask", "image": "ghcr.io/dask/dask:latest"}]},
        "status": dict(status),
    }
    if phase:
        pod["status"]["phase"] = phase
    if containers is not None:
        pod["status"]["containerStatuses"] = containers
    if init is not None:
        pod["status"]["initContainerStatuses"] = init
    if conditions is not None:
        pod["status"]["conditions"] = conditions
    if deleting:
        pod["metadata"]["deletionTimestamp"] = T
    return pod


def cstatus(state, name="dask", image="ghcr.io/dask/dask:latest", ready=False, restarts=0, last=None):
    s = {"name": name, "image": image, "imageID": "", "ready": ready, "restartCount": restarts, "started": False,
         "state": state, "lastState": last or {}}
    return s


RUNNING = make_pod("Running", [cstatus({"running": {"startedAt": T}}, ready=True)],
                   [{"type": "Ready", "status": "True", "lastTransitionTime": T},
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": T}], podIP="10.0.0.5")
JUST_CREATED = make_pod(None)
PENDING_SCHEDULING = make_pod("Pending", conditions=[])
CREATING = make_pod("Pending", [cstatus({"waiting": {"reason": "ContainerCreating"}})],
                    [{"type": "PodScheduled", "status": "True"}])
UNSCHEDULABLE = make_pod("Pending", conditions=[{
    "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastProbeTime": None,
    "lastTransitionTime": T,
    "message": "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: "
               "3 No preemption victims found for incoming pod.."}])
UNSCHEDULABLE_SHORT = make_pod("Pending", conditions=[{
    "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
    "message": "0/3 nodes are available: 3 Insufficient memory."}])
IMAGE_BACKOFF = make_pod("Pending", [cstatus({"waiting": {
    "reason": "ImagePullBackOff", "message": 'Back-off pulling image "nope:1"'}}, image="nope:1")],
    [{"type": "PodScheduled", "status": "True"}])
ERR_IMAGE_PULL = make_pod("Pending", [cstatus({"waiting": {
    "reason": "ErrImagePull",
    "message": 'rpc error: code = NotFound desc = failed to pull and unpack image "docker.io/library/nope:1": '
               'failed to resolve reference "docker.io/library/nope:1": docker.io/library/nope:1: not found'}},
    image="nope:1")])
IMAGE_BACKOFF_NO_MESSAGE = make_pod("Pending", [cstatus({"waiting": {"reason": "ImagePullBackOff"}}, image="nope:2")])
OOM = make_pod("Failed", [cstatus({"terminated": {
    "exitCode": 137, "reason": "OOMKilled", "startedAt": T, "finishedAt": T, "containerID": "containerd://abc"}})])
ERROR = make_pod("Failed", [cstatus({"terminated": {"exitCode": 1, "reason": "Error", "startedAt": T, "finishedAt": T}})])
START_ERROR = make_pod("Failed", [cstatus({"terminated": {
    "exitCode": 128, "reason": "StartError", "startedAt": "1970-01-01T00:00:00Z", "finishedAt": T,
    "message": 'exec: "dask-wrker": executable file not found in $PATH'}})])
CANNOT_RUN = make_pod("Failed", [cstatus({"terminated": {"exitCode": 127, "reason": "ContainerCannotRun"}})])
CRASHLOOP = make_pod("Running", [cstatus(
    {"waiting": {"reason": "CrashLoopBackOff",
                 "message": "back-off 1m20s restarting failed container=dask pod=dask-a-1-scheduler_ns(uid)"}},
    restarts=4, last={"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": T, "finishedAt": T}})],
    component="scheduler", name="dask-a-1-scheduler")
CONFIG_ERROR = make_pod("Pending", [cstatus({"waiting": {
    "reason": "CreateContainerConfigError", "message": 'secret "dask-token" not found'}})])
EVICTED = make_pod("Failed", [cstatus({"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                                                      "message": "The container could not be located when the pod was terminated"}})],
                   reason="Evicted",
                   message="The node was low on resource: memory. Threshold quantity: 100Mi, available: 91884Ki. "
                           "Container dask was using 5926124Ki, request is 6G, has larger consumption of memory.")
COMPLETED = make_pod("Succeeded", [cstatus({"terminated": {"exitCode": 0, "reason": "Completed"}})])
TERMINATING = copy.deepcopy(RUNNING)
TERMINATING["metadata"]["deletionTimestamp"] = T
INIT_CRASH = make_pod("Pending", [cstatus({"waiting": {"reason": "PodInitializing"}})],
                      init=[cstatus({"terminated": {"exitCode": 2, "reason": "Error"}}, name="fetch-env")])
INITIALIZING = make_pod("Pending", [cstatus({"waiting": {"reason": "PodInitializing"}})],
                        init=[cstatus({"running": {"startedAt": T}}, name="fetch-env")])
SIDECAR_DIED = make_pod("Running", [cstatus({"running": {"startedAt": T}}, ready=True),
                                    cstatus({"terminated": {"exitCode": 2}}, name="proxy")])
UNKNOWN = make_pod("Unknown")
FAILED_NO_DETAIL = make_pod("Failed")
DEADLINE = make_pod("Failed", reason="DeadlineExceeded", message="Pod was active on the node longer than the specified deadline")


@pytest.mark.parametrize("pod, phase, reason, message, problem", [
    (RUNNING, "Running", "", "", None),
    (JUST_CREATED, "Pending", "", "", None),
    (PENDING_SCHEDULING, "Pending", "", "", None),
    (CREATING, "Pending", "ContainerCreating", "", None),
    (INITIALIZING, "Pending", "PodInitializing", "", None),
    (COMPLETED, "Succeeded", "Completed", "container dask exited with code 0", None),
    (TERMINATING, "Terminating", "", "", None),
    (UNSCHEDULABLE_SHORT, "Pending", "Unschedulable", "0/3 nodes are available: 3 Insufficient memory.",
     "Unschedulable: 0/3 nodes are available: 3 Insufficient memory."),
    (IMAGE_BACKOFF, "Pending", "ImagePullBackOff", 'Back-off pulling image "nope:1"',
     'ImagePullBackOff: Back-off pulling image "nope:1"'),
    (IMAGE_BACKOFF_NO_MESSAGE, "Pending", "ImagePullBackOff", 'container dask can not pull image "nope:2"',
     'ImagePullBackOff: container dask can not pull image "nope:2"'),
    (OOM, "Failed", "OOMKilled", "container dask was killed for using more memory than its limit (exit code 137)",
     "OOMKilled: container dask was killed for using more memory than its limit (exit code 137)"),
    (ERROR, "Failed", "Error", "container dask exited with code 1", "Error: container dask exited with code 1"),
    (START_ERROR, "Failed", "StartError", 'exec: "dask-wrker": executable file not found in $PATH',
     'StartError: exec: "dask-wrker": executable file not found in $PATH'),
    (CANNOT_RUN, "Failed", "ContainerCannotRun", "container dask exited with code 127",
     "ContainerCannotRun: container dask exited with code 127"),
    (CONFIG_ERROR, "Pending", "CreateContainerConfigError", 'secret "dask-token" not found',
     'CreateContainerConfigError: secret "dask-token" not found'),
    (INIT_CRASH, "Pending", "Error", "init container fetch-env exited with code 2",
     "Error: init container fetch-env exited with code 2"),
    (SIDECAR_DIED, "Running", "Error", "container proxy exited with code 2", "Error: container proxy exited with code 2"),
    (UNKNOWN, "Unknown", "Unknown", "the pod's node does not report its state",
     "Unknown: the pod's node does not report its state"),
    (FAILED_NO_DETAIL, "Failed", "Failed", "the pod failed", "Failed: the pod failed"),
    (DEADLINE, "Failed", "DeadlineExceeded", "Pod was active on the node longer than the specified deadline",
     "DeadlineExceeded: Pod was active on the node longer than the specified deadline"),
])
def test_summary_and_problem(pod, phase, reason, message, problem):
    before = copy.deepcopy(pod)
    summary = pod_summary(pod)
    assert summary == {"name": pod["metadata"]["name"], "role": pod_role(pod), "phase": phase,
                       "reason": reason, "message": message}
    assert pod_problem(pod) == problem
    assert pod == before  # pure


def test_unschedulable_full_message():
    assert pod_problem(UNSCHEDULABLE).startswith("Unschedulable: 0/3 nodes are available: 3 Insufficient memory.")


def test_err_image_pull_keeps_the_registry_message():
    s = pod_summary(ERR_IMAGE_PULL)
    assert s["reason"] == "ErrImagePull" and "docker.io/library/nope:1: not found" in s["message"]


def test_crashloop_includes_last_exit():
    s = pod_summary(CRASHLOOP)
    assert s["role"] == "scheduler" and s["phase"] == "Running" and s["reason"] == "CrashLoopBackOff"
    assert s["message"] == ("back-off 1m20s restarting failed container=dask pod=dask-a-1-scheduler_ns(uid); "
                            "last exit: OOMKilled: container dask was killed for using more memory than its limit "
                            "(exit code 137)")


def test_evicted_wins_over_container_consequence():
    s = pod_summary(EVICTED)
    assert s["reason"] == "Evicted" and s["message"].startswith("The node was low on resource: memory.")
    assert pod_problem(EVICTED).startswith("Evicted: The node was low on resource: memory.")


def test_bad_waiting_wins_over_benign_and_unschedulable():
    pod = make_pod("Pending", [cstatus({"waiting": {"reason": "ContainerCreating"}}, name="a"),
                               cstatus({"waiting": {"reason": "ErrImagePull", "message": "nope"}}, name="b")],
                   [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "m"}])
    assert pod_summary(pod)["reason"] == "ErrImagePull"


def test_terminated_without_reason():
    pod = make_pod("Failed", [cstatus({"terminated": {"exitCode": 3}})])
    assert pod_problem(pod) == "Error: container dask exited with code 3"
    pod = make_pod("Failed", [cstatus({"terminated": {"exitCode": 1, "reason": "Error", "message": "boom"}})])
    assert pod_problem(pod) == "Error: container dask exited with code 1: boom"
    pod = make_pod("Failed", [cstatus({"terminated": {"reason": "Completed", "exitCode": 2}})])
    assert pod_summary(pod)["reason"] == "Error"


@pytest.mark.parametrize("pod, terminal, running, stuck", [
    (RUNNING, False, True, False),
    (TERMINATING, False, False, False),
    (JUST_CREATED, False, False, False),
    (CREATING, False, False, False),
    (UNSCHEDULABLE, False, False, True),
    (IMAGE_BACKOFF, False, False, True),
    (ERR_IMAGE_PULL, False, False, True),
    (CRASHLOOP, False, True, True),
    (CONFIG_ERROR, False, False, True),
    (OOM, True, False, False),
    (ERROR, True, False, False),
    (START_ERROR, True, False, False),
    (EVICTED, True, False, False),
    (COMPLETED, True, False, False),
    (UNKNOWN, False, False, False),
])
def test_predicates(pod, terminal, running, stuck):
    assert (is_terminal(pod), is_running(pod), is_stuck(pod)) == (terminal, running, stuck)


@pytest.mark.parametrize("labels, role", [
    ({"dask.org/component": "scheduler"}, "scheduler"),
    ({"dask.org/component": "worker"}, "worker"),
    ({"dask.org/component": "dask-worker"}, "worker"),  # classic dask-kubernetes pods
    ({"dask.org/component": "proxy"}, "other"),
    ({}, "other"),
    (None, "other"),
])
def test_pod_role(labels, role):
    assert pod_role({"metadata": {"labels": labels}}) == role


@pytest.mark.parametrize("pod", [{}, {"metadata": None, "status": None}, {"status": {"containerStatuses": None}},
                                 {"status": {"conditions": None, "phase": None}}])
def test_sparse_pods_never_raise(pod):
    assert pod_summary(pod) == {"name": "", "role": "other", "phase": "Pending", "reason": "", "message": ""}
    assert pod_problem(pod) is None and not is_stuck(pod) and not is_running(pod) and not is_terminal(pod)


# -- waiting for a node is not a failure (an autoscaler may add one) -----------------------------------------
def test_unschedulable_waits_other_stuck_reasons_fail():
    from jupyter_dask_kube.podstatus import is_waiting_for_node, pod_failure

    assert is_waiting_for_node(UNSCHEDULABLE) and pod_failure(UNSCHEDULABLE) is None
    assert pod_problem(UNSCHEDULABLE).startswith("Unschedulable:")  # still shown
    for pod in (IMAGE_BACKOFF, ERR_IMAGE_PULL, CONFIG_ERROR, CRASHLOOP):
        assert not is_waiting_for_node(pod) and pod_failure(pod) == pod_problem(pod), pod_summary(pod)
    invalid = make_pod("Pending", [cstatus({"waiting": {"reason": "InvalidImageName",
                                                        "message": 'couldn\'t parse image reference "Bad Image"'}})])
    assert pod_failure(invalid).startswith("InvalidImageName: couldn't parse image reference")
    for pod in (RUNNING, CREATING, JUST_CREATED, PENDING_SCHEDULING):
        assert not is_waiting_for_node(pod) and pod_failure(pod) is None
    # a terminated pod that was never placed is not waiting any more
    failed = copy.deepcopy(UNSCHEDULABLE)
    failed["status"]["phase"] = "Failed"
    assert not is_waiting_for_node(failed)


def test_readable_problem_leads_with_the_reason():
    from jupyter_dask_kube.podstatus import readable_problem

    sched = copy.deepcopy(UNSCHEDULABLE_SHORT)
    sched["metadata"] = {"name": "dask-alice-21ca10c-scheduler", "labels": {"dask.org/component": "scheduler"}}
    assert readable_problem(pod_summary(sched)) == (
        "waiting for a node: 0/3 nodes are available: 3 Insufficient memory. (scheduler pod dask-alice-21ca10c-scheduler)")
    assert readable_problem(pod_summary(IMAGE_BACKOFF)) == (
        'ImagePullBackOff: Back-off pulling image "nope:1" (worker pod dask-a-1-worker-ab1cd)')
    other = make_pod("Pending", [cstatus({"waiting": {"reason": "CreateContainerConfigError"}})], component=None, name="p")
    assert readable_problem(pod_summary(other)) == "CreateContainerConfigError (pod p)"


def test_final_event_is_the_autoscalers_refusal():
    from jupyter_dask_kube.podstatus import final_event

    scheduled = {"reason": "FailedScheduling", "message": "0/1 nodes are available: 1 Insufficient cpu.",
                 "lastTimestamp": "2026-05-01T10:00:00Z"}
    assert final_event([]) is None and final_event([scheduled]) is None
    older = {"reason": "NotTriggerScaleUp", "message": "pod didn't trigger scale-up: 1 max node group size reached",
             "lastTimestamp": "2026-05-01T10:00:05Z"}
    newer = dict(older, message="pod didn't trigger scale-up: 1 Insufficient cpu", lastTimestamp="2026-05-01T10:01:00Z")
    assert final_event([scheduled, newer, older]) == "NotTriggerScaleUp: pod didn't trigger scale-up: 1 Insufficient cpu"
    assert final_event([{"reason": "NotTriggerScaleUp"}]) == "NotTriggerScaleUp"
