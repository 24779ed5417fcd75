"""The in-memory object store with API-server semantics: one implementation for the local runtime and the
Kubernetes API emulator.

Objects are Kubernetes JSON dicts kept per resource (plural) under (namespace, name). The store gives them
uid, creationTimestamp and a resourceVersion from one monotonic counter, keeps a bounded history of change
events per resource (a watch resumes from a resourceVersion; older than what is kept is :class:`Gone`, a 410),
filters by namespace and label/field selectors (:mod:`.selectors`), and indexes ownerReferences so that the
dependents of a deleted owner can be found. Validation, defaults, graceful deletion and what deletion means for
processes stay with the caller. No I/O: watchers are fed through ``asyncio.Queue.put_nowait``.
"""
from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import logging
import random
import uuid
from collections.abc import Callable

from .selectors import parse_field_selector, parse_label_selector

__all__ = ["AlreadyExists", "Event", "GENERATE_CHARS", "Gone", "ObjectStore", "Watcher", "now_iso"]

log = logging.getLogger(__name__)

#: The characters kube-apiserver draws generateName suffixes from (no vowels, no confusable digits).
GENERATE_CHARS = "bcdfghjklmnpqrstvwxz2456789"

Key = tuple  # (plural, namespace, name)


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Gone(Exception):
    """A watch asked for changes since a resourceVersion older than the kept history (HTTP 410 Expired)."""

    def __init__(self, since: int, oldest: int):
        self.since, self.oldest = since, oldest
        super().__init__(f"too old resource version: {since} ({oldest})")


class AlreadyExists(Exception):
    pass


class Event:
    """One committed change: ``obj`` as committed, ``old`` the version it replaced (None for ADDED)."""

    __slots__ = ("rv", "type", "obj", "old")

    def __init__(self, rv: int, type: str, obj: dict, old: dict | None):
        self.rv, self.type, self.obj, self.old = rv, type, obj, old


class Watcher:
    """A subscription to one resource's events (``None`` in the queue: the store was closed)."""

    __slots__ = ("queue",)

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()


class ObjectStore:
    """``history``: events kept per resource for watch resumption. ``snapshot``: record deep copies in events
    (for callers that change stored objects in place; the emulator replaces them, so shares them).
    ``event_class``: what events are made of (the emulator's caches its JSON line)."""

    def __init__(self, history: int = 2000, *, snapshot: bool = False, event_class: type[Event] = Event,
                 rng: random.Random | None = None):
        self.history_size = history
        self.snapshot = snapshot
        self.event_class = event_class
        self.rng = rng or random.Random()
        self.rv = 0
        self.tables: dict[str, dict[tuple, dict]] = collections.defaultdict(dict)
        self.watchers: dict[str, set[Watcher]] = collections.defaultdict(set)
        #: ``hook(plural, event_type, obj, old)``, called after every committed change
        self.hooks: list[Callable[[str, str, dict, dict | None], None]] = []
        self._history: dict[str, collections.deque] = {}
        self._compacted: dict[str, int] = collections.defaultdict(int)
        self._floor = 0  # everything up to here was compacted, for every resource
        self._owners: dict[str, set[Key]] = collections.defaultdict(set)  # owner uid -> dependents
        self._refs: dict[Key, frozenset] = {}  # what is indexed for each dependent
        self._uids: dict[str, Key] = {}

    # -- reads ---------------------------------------------------------------------------------------
    def table(self, plural: str) -> dict[tuple, dict]:
        return self.tables[plural]

    def get(self, plural: str, namespace: str | None, name: str) -> dict | None:
        return self.tables[plural].get((namespace, name))

    def has_uid(self, uid: str | None) -> bool:
        return uid in self._uids

    def select(self, plural: str, namespace: str | None = None, *, labels: str | None = None,
               fields: str | None = None) -> list[dict]:
        """Objects in ``namespace`` (None: all) matching label and field selector strings (raises
        :class:`~.selectors.SelectorError`), in insertion order."""
        label_m = parse_label_selector(labels)
        field_m = parse_field_selector(fields, plural)
        return [o for (ns, _), o in self.tables[plural].items()
                if (namespace is None or ns == namespace)
                and (label_m is None or label_m(o["metadata"].get("labels")))
                and (field_m is None or field_m(o))]

    # -- writes --------------------------------------------------------------------------------------
    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def generate_name(self, plural: str, namespace: str | None, prefix: str) -> str:
        """A free name from a generateName prefix, as kube-apiserver makes them (prefix cut to 58)."""
        base = prefix[:58]
        table = self.tables[plural]
        for _ in range(100):
            name = base + "".join(self.rng.choice(GENERATE_CHARS) for _ in range(5))
            if (namespace, name) not in table:
                break
        return name

    def add(self, plural: str, obj: dict) -> dict:
        """Store a new object under its metadata namespace/name: uid, creationTimestamp, resourceVersion; ADDED."""
        meta = obj["metadata"]
        key = (meta.get("namespace"), meta["name"])
        table = self.tables[plural]
        if key in table:
            raise AlreadyExists(f'{plural} "{meta["name"]}" already exists')
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_iso()
        meta["resourceVersion"] = str(self.next_rv())
        table[key] = obj
        self._uids[meta["uid"]] = (plural, *key)
        self._index(plural, obj)
        self._publish(plural, "ADDED", obj, None)
        return obj

    def commit(self, plural: str, new: dict, old: dict | None = None) -> dict:
        """Store ``new`` in place of ``old`` (omitted: ``new`` was changed in place): identity kept, a new
        resourceVersion, MODIFIED."""
        meta = new["metadata"]
        if old is not None and old is not new:
            for field in ("name", "namespace", "uid", "creationTimestamp", "generateName"):
                if field in old["metadata"]:
                    meta[field] = old["metadata"][field]
        key = (meta.get("namespace"), meta["name"])
        meta["resourceVersion"] = str(self.next_rv())
        self.tables[plural][key] = new
        self._index(plural, new)
        self._publish(plural, "MODIFIED", new, new if old is None else old)
        return new

    def remove(self, plural: str, obj: dict) -> dict | None:
        """Remove this stored object (None if it is not the one stored): DELETED with a new resourceVersion."""
        meta = obj["metadata"]
        key = (meta.get("namespace"), meta["name"])
        table = self.tables[plural]
        if table.get(key) is not obj:
            return None
        del table[key]
        self._uids.pop(meta.get("uid"), None)
        self._unindex((plural, *key))
        gone = dict(obj, metadata=dict(meta, resourceVersion=str(self.next_rv())))
        self._publish(plural, "DELETED", gone, obj)
        return gone

    def clear(self) -> None:
        """Forget every object at once, without events (the owner is shutting down)."""
        self.tables.clear()
        self._owners.clear()
        self._refs.clear()
        self._uids.clear()

    # -- ownerReferences -----------------------------------------------------------------------------
    def pop_dependents(self, owner_uid: str | None) -> list[Key]:
        """The (plural, namespace, name) of every object owned by ``owner_uid``, sorted; forgotten here."""
        return sorted(self._owners.pop(owner_uid, ())) if owner_uid else []

    def owners_gone(self, obj: dict, kinds: tuple[str, ...] | None = None) -> bool:
        """True when ``obj`` has owners (of these kinds) and none of them is stored (it is garbage at once)."""
        refs = [r for r in obj["metadata"].get("ownerReferences") or () if kinds is None or r.get("kind") in kinds]
        return bool(refs) and all(r.get("uid") not in self._uids for r in refs)

    def _index(self, plural: str, obj: dict) -> None:
        meta = obj["metadata"]
        key = (plural, meta.get("namespace"), meta["name"])
        uids = frozenset(r["uid"] for r in meta.get("ownerReferences") or () if r.get("uid"))
        if self._refs.get(key, frozenset()) == uids:
            return
        self._unindex(key)
        if uids:
            self._refs[key] = uids
            for uid in uids:
                self._owners[uid].add(key)

    def _unindex(self, key: Key) -> None:
        for uid in self._refs.pop(key, ()):
            dependents = self._owners.get(uid)
            if dependents:
                dependents.discard(key)
                if not dependents:
                    del self._owners[uid]

    # -- events and watches --------------------------------------------------------------------------
    def _publish(self, plural: str, etype: str, obj: dict, old: dict | None) -> None:
        if self.snapshot:
            same, obj = old is obj, copy.deepcopy(obj)
            old = obj if same else copy.deepcopy(old)
        ev = self.event_class(self.rv, etype, obj, old)
        hist = self._history.get(plural)
        if hist is None:
            hist = self._history[plural] = collections.deque()
        if len(hist) >= self.history_size:
            self._compacted[plural] = hist.popleft().rv
        hist.append(ev)
        for w in self.watchers.get(plural, ()):
            w.queue.put_nowait(ev)
        for hook in self.hooks:
            try:
                hook(plural, etype, obj, old)
            except Exception:  # a broken controller must not break the API
                log.exception("hook failed on %s %s", etype, plural)

    def events_since(self, plural: str, since: int) -> list[Event]:
        """The kept events of ``plural`` after resourceVersion ``since``; :class:`Gone` if some were dropped."""
        compacted = max(self._floor, self._compacted[plural])
        if since < compacted:
            raise Gone(since, compacted + 1)
        return [ev for ev in self._history.get(plural, ()) if ev.rv > since]

    def subscribe(self, plural: str, watcher: Watcher | None = None) -> Watcher:
        """Events of ``plural`` committed from now on go to the watcher's queue (until :meth:`unsubscribe`)."""
        watcher = watcher or Watcher()
        self.watchers[plural].add(watcher)
        return watcher

    def unsubscribe(self, plural: str, watcher: Watcher) -> None:
        self.watchers[plural].discard(watcher)

    def close_watches(self) -> None:
        """End every watch: ``None`` in each queue."""
        for watchers in self.watchers.values():
            for w in watchers:
                w.queue.put_nowait(None)

    def compact(self) -> int:
        """Forget all history (like etcd compaction): resuming from an older resourceVersion is Gone."""
        for hist in self._history.values():
            hist.clear()
        self._floor = self.rv
        return self.rv
