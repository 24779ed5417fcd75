"""The security floor (issue #11): advisories.py's table against pyproject.toml, the installed versions and the
README; the warnings it gives for older versions (pure), and through ``GET dask-kube/api/status``."""
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from jupyter_dask_kube import advisories

from helpers import rest_call

pytest_plugins = ["pytest_jupyter.jupyter_server"]

ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_minimum(package: str) -> Version:
    """The ``>=`` bound pyproject.toml declares for ``package`` (in its extra per advisories.EXTRA)."""
    extra = advisories.EXTRA.get(package)
    reqs = PYPROJECT["optional-dependencies"][extra] if extra else PYPROJECT["dependencies"]
    for text in reqs:
        req = Requirement(text)
        if _norm(req.name) == _norm(package):
            bounds = [Version(s.version) for s in req.specifier if s.operator == ">="]
            assert len(bounds) == 1, f"{text}: one >= bound expected"
            return bounds[0]
    raise AssertionError(f"{package} is not declared in pyproject.toml ({extra or 'dependencies'})")


@pytest.mark.parametrize("package", sorted(advisories.minimums()))
def test_pyproject_requires_the_floor(package):
    assert declared_minimum(package) == Version(advisories.minimums()[package])


@pytest.mark.parametrize("package", sorted(advisories.minimums()))
def test_the_installed_versions_are_at_the_floor(package):
    version = advisories.installed_versions()[package]
    assert version is not None, f"{package} not installed in the test environment"
    assert Version(version) >= Version(advisories.minimums()[package])


def test_the_table_is_well_formed_and_listed_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    ids = [a.id for a in advisories.ADVISORIES]
    assert len(ids) == len(set(ids))
    for a in advisories.ADVISORIES:
        assert re.fullmatch(r"GHSA(-[23456789cfghjmpqrvwx]{4}){3}|CVE-\d{4}-\d{4,}", a.id), a.id
        assert not a.cve or re.fullmatch(r"CVE-\d{4}-\d{4,}", a.cve), a.cve
        Version(a.fixed)
        assert a.id in readme, f"{a.id} missing from the README's list"
    assert set(advisories.EXTRA) <= set(advisories.minimums())


def test_current_versions_give_no_warning():
    assert advisories.outdated({p: v for p, v in advisories.minimums().items()}) == []
    assert advisories.outdated({"jupyter_server": "3.0.0", "bokeh": "3.9.2"}) == []


def test_older_versions_are_named_with_the_advisories_they_miss():
    warnings = advisories.outdated({"jupyter-server": "2.18.0", "bokeh": "3.8.1", "jupyter_server_proxy": "4.2.0",
                                    "jupyterhub": None})
    assert len(warnings) == 2, warnings
    server, bokeh = sorted(warnings, key=lambda w: not w.startswith("jupyter_server"))
    assert server.startswith("jupyter_server 2.18.0 is older than 2.20.0")
    # 2.18.0 has the 2.18.0 fixes, not the later ones
    assert "GHSA-gf7q-q4j7-hp7c" in server and "GHSA-fcw5-x6j4-ccmp" in server
    assert "GHSA-24qx-w28j-9m6p" not in server and "GHSA-r726-vmfq-j9j3" not in server
    assert "bokeh 3.8.1" in bokeh and "GHSA-793v-589g-574v" in bokeh and "fixed in 3.8.2" in bokeh


def test_not_installed_is_no_warning_and_a_bad_version_is_named():
    assert advisories.outdated({"jupyterhub": None}) == []
    assert advisories.outdated({"bokeh": "not-a-version"}) == [
        "bokeh not-a-version: cannot tell whether it has the security fixes of 3.8.2"]


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"jupyter_dask_kube": True}},
            "DaskKube": {"backend": "local"}}


async def test_status_warns_about_older_running_versions(jp_fetch, monkeypatch):
    code, status = await rest_call(jp_fetch, "GET", "status", expect=200)
    assert status["warnings"] == [], status  # this environment is at the floor
    monkeypatch.setattr(advisories, "installed_versions",
                        lambda: {**dict.fromkeys(advisories.minimums()), "jupyter-server-proxy": "4.1.1"})
    code, status = await rest_call(jp_fetch, "GET", "status", expect=200)
    assert len(status["warnings"]) == 1, status
    assert "jupyter-server-proxy 4.1.1 is older than 4.2.0" in status["warnings"][0]
    assert "GHSA-w3vc-fx9p-wp4v" not in status["warnings"][0] and "GHSA-fvcq-4x64-hqxr" in status["warnings"][0]
    assert status["problems"] == [] and status["backend"] == "local"
