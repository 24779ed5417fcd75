"""The object store shared by the local runtime and the emulator: resourceVersions, watch history, 410 Gone,
selectors and the owner index (pure: no processes, no server)."""
from __future__ import annotations

import asyncio
import random

import pytest

from jupyter_dask_kube.objectstore import GENERATE_CHARS, AlreadyExists, Gone, ObjectStore
from jupyter_dask_kube.selectors import SelectorError


def obj(name, ns="default", labels=None, owners=(), **extra):
    meta = {"name": name, "namespace": ns}
    if labels is not None:
        meta["labels"] = labels
    if owners:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": o["metadata"]["name"],
                                    "uid": o["metadata"]["uid"]} for o in owners]
    return {"metadata": meta, **extra}


def test_resource_versions_increase_across_resources_and_changes():
    store = ObjectStore()
    a = store.add("pods", obj("a"))
    s = store.add("services", obj("s"))
    assert int(a["metadata"]["resourceVersion"]) < int(s["metadata"]["resourceVersion"]) == store.rv
    assert a["metadata"]["uid"] != s["metadata"]["uid"] and a["metadata"]["creationTimestamp"].endswith("Z")
    uid = a["metadata"]["uid"]
    a["status"] = {"phase": "Running"}
    store.commit("pods", a)
    assert a["metadata"]["resourceVersion"] == str(store.rv) == "3"
    # a replacement keeps the identity of what it replaces
    b = {"metadata": {"name": "a", "namespace": "default", "uid": "forged", "labels": {"x": "1"}}}
    store.commit("pods", b, a)
    assert store.get("pods", "default", "a") is b and b["metadata"]["uid"] == uid
    assert b["metadata"]["creationTimestamp"] == a["metadata"]["creationTimestamp"]
    gone = store.remove("pods", b)
    assert gone["metadata"]["resourceVersion"] == "5" and store.get("pods", "default", "a") is None
    assert store.remove("pods", b) is None  # already gone
    with pytest.raises(AlreadyExists):
        store.add("services", obj("s"))
    assert [(e.rv, e.type) for e in store.events_since("pods", 0)] == [
        (1, "ADDED"), (3, "MODIFIED"), (4, "MODIFIED"), (5, "DELETED")]


def test_history_from_a_resource_version_and_410_when_too_old():
    store = ObjectStore(history=3)
    p = store.add("pods", obj("p"))
    for _ in range(2):
        store.commit("pods", p)
    assert [e.rv for e in store.events_since("pods", 1)] == [2, 3]
    assert store.events_since("pods", 3) == []
    store.commit("pods", p)  # rv 4: the oldest kept event (rv 1) is dropped
    assert [e.rv for e in store.events_since("pods", 1)] == [2, 3, 4]
    with pytest.raises(Gone) as e:
        store.events_since("pods", 0)
    assert e.value.since == 0 and e.value.oldest == 2 and "too old resource version: 0 (2)" in str(e.value)
    # the window is per resource: other resources' changes do not push pods out
    for i in range(5):
        store.add("services", obj(f"s{i}"))
    assert [e.rv for e in store.events_since("pods", 1)] == [2, 3, 4]
    # compaction forgets everything for every resource, including ones never written
    rv = store.compact()
    assert rv == store.rv == 9
    for plural in ("pods", "services", "secrets"):
        with pytest.raises(Gone):
            store.events_since(plural, rv - 1)
        assert store.events_since(plural, rv) == []
    store.commit("pods", p)
    assert [e.type for e in store.events_since("pods", rv)] == ["MODIFIED"]


def test_snapshot_events_do_not_change_with_the_stored_object():
    store = ObjectStore(snapshot=True)
    p = store.add("pods", obj("p", status={"phase": "Pending"}))
    p["status"]["phase"] = "Running"
    store.commit("pods", p)
    p["status"]["phase"] = "Succeeded"
    phases = [(e.type, e.obj["status"]["phase"]) for e in store.events_since("pods", 0)]
    assert phases == [("ADDED", "Pending"), ("MODIFIED", "Running")]
    shared = ObjectStore()
    q = shared.add("pods", obj("q"))
    assert shared.events_since("pods", 0)[0].obj is q


def test_watchers_receive_events_of_their_resource_until_unsubscribed():
    async def body():
        store = ObjectStore()
        w = store.subscribe("pods")
        other = store.subscribe("services")
        store.add("pods", obj("a"))
        store.add("services", obj("s"))
        ev = w.queue.get_nowait()
        assert (ev.type, ev.obj["metadata"]["name"]) == ("ADDED", "a") and w.queue.empty()
        assert other.queue.get_nowait().obj["metadata"]["name"] == "s"
        store.unsubscribe("pods", w)
        store.add("pods", obj("b"))
        assert w.queue.empty()
        store.close_watches()
        assert other.queue.get_nowait() is None
        assert not store.watchers["pods"]
    asyncio.run(body())


def test_hooks_see_every_change_and_a_failing_hook_breaks_nothing():
    store = ObjectStore()
    seen = []
    store.hooks.append(lambda plural, etype, o, old: seen.append((plural, etype, o["metadata"]["name"],
                                                                  old is not None)))
    store.hooks.append(lambda *a: 1 / 0)
    p = store.add("pods", obj("p"))
    store.commit("pods", p)
    store.remove("pods", p)
    assert seen == [("pods", "ADDED", "p", False), ("pods", "MODIFIED", "p", True), ("pods", "DELETED", "p", True)]


def test_select_by_namespace_labels_and_fields():
    store = ObjectStore()
    store.add("pods", obj("a", labels={"app": "dask", "role": "worker"}, spec={"nodeName": "n1"}))
    store.add("pods", obj("b", labels={"app": "dask", "role": "scheduler"}, spec={"nodeName": "n2"}))
    store.add("pods", obj("c", ns="other", labels={"app": "dask", "role": "worker"}, spec={}))
    store.add("pods", obj("d"))

    def names(**kw):
        return [o["metadata"]["name"] for o in store.select("pods", **kw)]
    assert names() == ["a", "b", "c", "d"]
    assert names(namespace="default") == ["a", "b", "d"]
    assert names(labels="app=dask,role!=scheduler") == ["a", "c"]
    assert names(labels="role in (scheduler, nope)") == ["b"]
    assert names(labels="!app") == ["d"]
    assert names(namespace="default", labels="app", fields="spec.nodeName=n1") == ["a"]
    assert names(fields="metadata.namespace!=default") == ["c"]
    with pytest.raises(SelectorError):
        store.select("pods", labels="app in dask")
    with pytest.raises(SelectorError):
        store.select("pods", fields="spec.image=x")


def test_owner_index_gives_dependents_sorted_once():
    store = ObjectStore()
    owner = store.add("pods", obj("owner"))
    other = store.add("pods", obj("other"))
    store.add("services", obj("svc", owners=[owner]))
    store.add("pods", obj("w-b", owners=[owner]))
    store.add("pods", obj("w-a", owners=[owner, other]))
    store.add("pods", obj("x", ns="another", owners=[other]))
    uid = owner["metadata"]["uid"]
    assert store.pop_dependents(uid) == [("pods", "default", "w-a"), ("pods", "default", "w-b"),
                                         ("services", "default", "svc")]
    assert store.pop_dependents(uid) == []  # forgotten once handed out
    assert store.pop_dependents(None) == []
    # a dependent removed or disowned leaves the index
    w_a = store.get("pods", "default", "w-a")
    store.remove("pods", w_a)
    x = store.get("pods", "another", "x")
    x["metadata"].pop("ownerReferences")
    store.commit("pods", x)  # changed in place: the index follows
    assert store.pop_dependents(other["metadata"]["uid"]) == []


def test_owners_gone_only_for_stored_kinds_all_missing():
    store = ObjectStore()
    owner = store.add("pods", obj("owner"))
    orphan = obj("orphan", owners=[owner])
    assert not store.owners_gone(orphan)
    store.remove("pods", owner)
    assert store.owners_gone(orphan) and store.owners_gone(orphan, ("Pod",))
    assert not store.owners_gone(orphan, ("Service",))  # an owner of a kind the caller does not store
    assert not store.owners_gone(obj("free"))
    alive = store.add("pods", obj("alive"))
    orphan["metadata"]["ownerReferences"].append({"kind": "Pod", "name": "alive", "uid": alive["metadata"]["uid"]})
    assert not store.owners_gone(orphan)


def test_generate_name_is_free_and_cut_to_58():
    store = ObjectStore()
    prefix = "x" * 70
    name = store.generate_name("pods", "default", prefix)
    assert len(name) == 63 and name.startswith("x" * 58) and set(name[58:]) <= set(GENERATE_CHARS)
    taken = store.add("pods", obj(store.generate_name("pods", "default", "p-")))["metadata"]["name"]
    store.rng = random.Random(1)
    first = store.generate_name("pods", "default", "p-")
    store.add("pods", obj(first))
    store.rng = random.Random(1)  # the same draw again: the taken name is skipped
    assert store.generate_name("pods", "default", "p-") not in (first, taken)


def test_clear_forgets_objects_and_owners():
    store = ObjectStore()
    owner = store.add("pods", obj("owner"))
    store.add("pods", obj("dep", owners=[owner]))
    rv = store.rv
    store.clear()
    assert store.select("pods") == [] and store.pop_dependents(owner["metadata"]["uid"]) == []
    assert not store.has_uid(owner["metadata"]["uid"]) and store.rv == rv
