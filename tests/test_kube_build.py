"""The build of the real control plane's binaries (testing/kube_build.py): the parts that need no apt or Go."""
from __future__ import annotations

import os
import stat

import pytest

from jupyter_dask_kube.testing import kube_build

# The shape of reflect2 v1.0.1's two files that the fix edits (abridged to what it touches).
UNSAFE_LINK = """package reflect2

import "unsafe"

//go:linkname mapassign reflect.mapassign
//go:noescape
func mapassign(rtype unsafe.Pointer, m unsafe.Pointer, key, val unsafe.Pointer)

// m escapes into the return value, but the caller of mapiterinit
// doesn't let the return value escape.
//go:noescape
//go:linkname mapiterinit reflect.mapiterinit
func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer) (val *hiter)

//go:noescape
//go:linkname mapiternext reflect.mapiternext
func mapiternext(it *hiter)

type hiter struct {
	key   unsafe.Pointer
	value unsafe.Pointer
	t     unsafe.Pointer
	h     unsafe.Pointer
}
"""
UNSAFE_MAP = """package reflect2

func (type2 *UnsafeMapType) UnsafeIterate(obj unsafe.Pointer) MapIterator {
	return &UnsafeMapIterator{
		hiter:      mapiterinit(type2.rtype, *(*unsafe.Pointer)(obj)),
		pKeyRType:  type2.pKeyRType,
		pElemRType: type2.pElemRType,
	}
}

type UnsafeMapIterator struct {
	*hiter
}
"""


def test_reflect2_gets_the_go118_mapiterinit(tmp_path):
    pkg = tmp_path / "vendor" / "github.com" / "modern-go" / "reflect2"
    pkg.mkdir(parents=True)
    (pkg / "unsafe_link.go").write_text(UNSAFE_LINK)
    (pkg / "unsafe_map.go").write_text(UNSAFE_MAP)
    kube_build.fix_reflect2(tmp_path)
    link, umap = (pkg / "unsafe_link.go").read_text(), (pkg / "unsafe_map.go").read_text()
    assert "mapiterinit" not in link.replace("caller of mapiterinit", "")
    assert "func mapiternext(it *hiter)" in link and "//go:noescape\n//go:linkname mapiternext" in link
    assert "checkBucket uintptr" in link  # the whole runtime hiter: the caller allocates it now
    assert "UnsafeIterate" not in umap and "type UnsafeMapIterator struct" in umap
    above, below = (pkg / "go_above_118.go").read_text(), (pkg / "go_below_118.go").read_text()
    assert above.startswith("//go:build go1.18\n") and "func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer, it *hiter)" in above
    assert below.startswith("//go:build !go1.18\n") and "(val *hiter)" in below
    kube_build.fix_reflect2(tmp_path)  # idempotent
    assert (pkg / "unsafe_link.go").read_text() == link


def test_reflect2_of_another_shape_is_refused_with_a_message(tmp_path):
    pkg = tmp_path / "vendor" / "github.com" / "modern-go" / "reflect2"
    pkg.mkdir(parents=True)
    (pkg / "unsafe_link.go").write_text("package reflect2\n")
    (pkg / "unsafe_map.go").write_text(UNSAFE_MAP)
    with pytest.raises(kube_build.BuildError, match="does not look like reflect2 v1.0.1"):
        kube_build.fix_reflect2(tmp_path)


def test_openapi_packages_are_those_with_the_tag(tmp_path):
    for rel, body in {
        "vendor/k8s.io/api/core/v1/doc.go": "// +k8s:openapi-gen=true\npackage v1\n",
        "pkg/apis/thing/doc.go": "// +k8s:openapi-gen=false\npackage thing\n",
        "pkg/other/x.go": "package other // mentions +k8s:openapi-gen= in a string only\nvar s = \"+k8s:openapi-gen=\"\n",
        "pkg/apis/thing/testdata/doc.go": "// +k8s:openapi-gen=true\npackage testdata\n",
        "pkg/apis/thing/x_test.go": "// +k8s:openapi-gen=true\npackage thing\n",
    }.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(body)
    assert kube_build._openapi_packages(tmp_path) == ["k8s.io/kubernetes/pkg/apis/thing",
                                                      "k8s.io/kubernetes/vendor/k8s.io/api/core/v1"]


def test_install_is_done_only_once_the_stamp_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("JDK_KUBE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    out.mkdir()
    for name in kube_build.BINARIES:
        (out / name).write_text("#!/bin/sh\necho Kubernetes v1.20.2\n")
        (out / name).chmod(0o755)
    assert "not built" in kube_build.missing() and "make kube-binaries" in kube_build.missing()
    kube_build.install(out)
    assert kube_build.bin_dir() == tmp_path / "cache" / "kubernetes-v1.20.2" / "bin"
    if kube_build.shutil.which("etcd"):
        assert kube_build.missing() is None
    kube_build.smoke_test()
    # a stamp from another recipe, or a binary that is gone, is not done
    (kube_build.bin_dir() / ".built").write_text("kubernetes=old recipe=0\n")
    assert "not built" in kube_build.missing()
    kube_build.install(out)
    os.unlink(kube_build.binary("kube-controller-manager"))
    assert "not built" in kube_build.missing()
    assert stat.S_IMODE(os.stat(kube_build.binary("kube-apiserver")).st_mode) & 0o111


def test_apt_policy_origin_is_parsed(monkeypatch):
    policy = f"""kubernetes-client:
  Installed: (none)
  Candidate: {kube_build.DEBIAN_VERSION}
  Version table:
     {kube_build.DEBIAN_VERSION} 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
"""
    monkeypatch.setattr(kube_build, "output", lambda cmd, **kw: policy)
    assert kube_build._binary_origin() == ("http://deb.debian.org/debian", "bookworm", "main")
    monkeypatch.setattr(kube_build, "output", lambda cmd, **kw: "kubernetes-client:\n  Candidate: (none)\n")
    assert kube_build._binary_origin() is None
