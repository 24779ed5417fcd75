"""The security floor (issue #11): the published advisories against the web-facing packages we run with, the
least version of each that carries all their fixes, and the readable warnings for older running versions
(pure: no I/O, except ``installed_versions``).

One table, three readers: pyproject.toml's minimums (tests/test_advisories.py checks they match), the
``GET dask-kube/api/status`` warnings (handlers.StatusHandler) and the README's list.

Fixed versions are the advisories' own (GitHub advisories, PyPA advisory database); for packages with several
release lines, the fix in the line we require. jupyterhub is only in the ``hub`` extra (the hub's environment),
so it is checked only where it is installed.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from packaging.version import InvalidVersion, Version


@dataclass(frozen=True)
class Advisory:
    id: str           # GHSA id where there is one, else the CVE
    cve: str          # "" when none was assigned
    package: str      # distribution name as pip knows it
    fixed: str        # first version (in the line we require) with the fix
    summary: str


ADVISORIES: tuple[Advisory, ...] = (
    Advisory("GHSA-w3vc-fx9p-wp4v", "CVE-2024-28179", "jupyter-server-proxy", "4.1.1",
             "websockets proxied without checking authentication"),
    Advisory("GHSA-fvcq-4x64-hqxr", "CVE-2024-35225", "jupyter-server-proxy", "4.2.0",
             "reflected XSS through the host segment of the /proxy/ endpoint"),
    Advisory("GHSA-r726-vmfq-j9j3", "CVE-2023-39968", "jupyter_server", "2.7.2",
             "open redirect after login"),
    Advisory("GHSA-h56g-gq9v-vc8r", "CVE-2023-49080", "jupyter_server", "2.11.2",
             "tracebacks with server paths in JSON error responses"),
    Advisory("GHSA-24qx-w28j-9m6p", "CVE-2026-40110", "jupyter_server", "2.18.0",
             "allow_origin_pat matched origins by prefix (CORS bypass)"),
    Advisory("GHSA-5789-5fc7-67v3", "CVE-2026-35397", "jupyter_server", "2.18.0",
             "path traversal into sibling directories sharing root_dir's name prefix"),
    Advisory("GHSA-gf7q-q4j7-hp7c", "CVE-2026-5422", "jupyter_server", "2.18.2",
             "path traversal through the contents manager's root boundary check"),
    Advisory("GHSA-fcw5-x6j4-ccmp", "CVE-2026-44727", "jupyter_server", "2.20.0",
             "stored XSS in the nbconvert handlers (no sandbox CSP)"),
    Advisory("GHSA-793v-589g-574v", "CVE-2026-21883", "bokeh", "3.8.2",
             "incomplete WebSocket origin validation (cross-site WebSocket hijacking)"),
    Advisory("GHSA-7r3h-4ph8-w38g", "CVE-2024-28233", "jupyterhub", "4.1.0",
             "XSS through cookie tossing from a sibling subdomain"),
    Advisory("CVE-2026-40864", "CVE-2026-40864", "jupyterhub", "5.4.5",
             "XSRF check skipped for Sec-Fetch-Mode: no-cors form posts"),
    Advisory("GHSA-p43p-whwx-q52h", "", "jupyterhub", "5.5.0",
             "log exhaustion through failed logins"),
    Advisory("GHSA-c4gm-pwx9-9w8j", "", "jupyterhub", "5.5.1",
             "XSS through share links (user-initiated sharing)"),
    Advisory("GHSA-69wv-m5fw-2fhp", "", "jupyterhub", "5.5.1",
             "filtered admin roles not enforced"),
    Advisory("GHSA-mj6q-mp44-53v8", "", "jupyterhub", "5.5.2",
             "share scopes kept after a user is renamed"),
)

# Where each package's floor is declared in pyproject.toml: a runtime dependency, or an extra.
EXTRA = {"jupyterhub": "hub"}


def _key(package: str) -> str:
    """PEP 503 normalized name: jupyter_server == jupyter-server."""
    return package.lower().replace("_", "-").replace(".", "-")


def minimums() -> dict[str, str]:
    """package -> least version with every listed fix."""
    out: dict[str, str] = {}
    for a in ADVISORIES:
        if a.package not in out or Version(a.fixed) > Version(out[a.package]):
            out[a.package] = a.fixed
    return out


def outdated(versions: dict[str, str | None]) -> list[str]:
    """Readable warnings for ``versions`` (package -> running version, None when not installed): one per
    package older than its floor, naming the advisories it misses. Packages not installed are skipped (the
    hub extra is not in a single-user server); an unparsable version is named as such."""
    running = {_key(k): v for k, v in versions.items()}
    warnings = []
    for package, floor in minimums().items():
        have = running.get(_key(package))
        if not have:
            continue
        try:
            current = Version(have)
        except InvalidVersion:
            warnings.append(f"{package} {have}: cannot tell whether it has the security fixes of {floor}")
            continue
        if current >= Version(floor):
            continue
        missed = [a for a in ADVISORIES if a.package == package and current < Version(a.fixed)]
        ids = ", ".join(f"{a.id} ({a.summary}, fixed in {a.fixed})" for a in missed)
        warnings.append(f"{package} {have} is older than {floor}, which fixes published advisories: {ids}. "
                        f"Ask your hub admin to upgrade it.")
    return warnings


def installed_versions() -> dict[str, str | None]:
    """The running versions of the packages in the table (None when not installed)."""
    out: dict[str, str | None] = {}
    for package in minimums():
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def status_warnings() -> list[str]:
    """What ``GET status`` warns about (the running versions against the table)."""
    return outdated(installed_versions())
