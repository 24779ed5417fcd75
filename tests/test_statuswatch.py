"""worker_changes: the add/remove updates an attached cluster's poll turns into (pure)."""
from jupyter_dask_kube.statuswatch import worker_changes


def test_worker_changes():
    assert worker_changes({}, {}) == []
    assert worker_changes({"a": {}}, {"a": {"x": 1}}) == []  # known workers are not re-added
    assert worker_changes({"a": {}, "b": {}}, {"b": {}, "c": {"n": 1}}) == [("remove", "a"), ("add", {"workers": {"c": {"n": 1}}})]
    assert worker_changes({"a": {}}, {}) == [("remove", "a")]
