"""deploycheck.kube: the single-node variant of deploy/k8s that `podman kube play` runs differs
from the manifests only in what DIFFERENCES lists, and deploy/README.md lists each of them."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from deploycheck import kube

from .conftest import DEPLOY


def _place(tmp_path: Path, size: str = "1G") -> kube.Place:
    secrets = {f"{role}/{name}": tmp_path / f"{role}-{name}"
               for role in ("source", "dest") for name in ("migrator-token", "migrator-tls")}
    return kube.Place(image="localhost/migrator:test", source_port=18470, dest_port=18471,
                      secrets=secrets, socket_dir=tmp_path / "run", hosts_file=tmp_path / "hosts",
                      memory="1GiB", hugepages="1Gi", hugepage_size=size, label="k=v")


def _templates() -> dict[str, dict]:
    """role (first container arg) -> the manifests' pod spec."""
    out = {}
    for doc in kube.manifests():
        template = doc.get("spec", {}).get("template")
        if template:
            out[template["spec"]["containers"][0]["args"][0]] = template["spec"]
    return out


def _spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]


def test_the_variant_plays_the_source_deployment_and_the_destination_and_guest_as_pods(tmp_path):
    daemons, guest = kube.variant(_place(tmp_path))
    assert [(d["kind"], _spec(d)["containers"][0]["args"][0]) for d in daemons] == \
        [("Deployment", "source"), ("Pod", "dest")]
    assert [(d["kind"], d["spec"]["restartPolicy"]) for d in guest] == [("Pod", "Never")]


def test_only_the_listed_fields_differ_from_the_manifests(tmp_path):
    """Undo each listed difference on the variant: what is left is the manifests' pod spec."""
    place = _place(tmp_path)
    daemons, guest = kube.variant(place)
    manifests = _templates()
    for doc in daemons + guest:
        spec = copy.deepcopy(_spec(doc))
        role = spec["containers"][0]["args"][0]
        original = copy.deepcopy(manifests[role])
        assert spec.pop("hostNetwork") is True  # "network"
        if role == "guest":
            assert spec.pop("restartPolicy") == "Never"  # "daemonset": a Job's pod
            original.pop("restartPolicy")
        for c in original["containers"]:
            for key in ("startupProbe", "readinessProbe", "livenessProbe", "ports"):
                c.pop(key, None)  # "probes", "network"
            c["image"], c["imagePullPolicy"] = place.image, "Never"  # "image"
        if role == "dest":  # "namespace": the Service's name in /etc/hosts
            assert spec["volumes"].pop() == {"name": "hosts", "hostPath": {
                "path": str(place.hosts_file), "type": "File"}}
            assert spec["containers"][0]["volumeMounts"].pop() == {
                "name": "hosts", "mountPath": "/etc/hosts", "readOnly": True}
        for volume, was in zip(spec["volumes"], original["volumes"]):
            if "secret" in was:  # "secrets"
                assert volume == {"name": was["name"], "hostPath": {
                    "path": str(place.secrets[f"{role}/{was['secret']['secretName']}"]),
                    "type": "Directory"}}
                volume.clear(), was.clear()
            elif was.get("hostPath", {}).get("path") == "/run/migrator":  # "socket"
                assert volume["hostPath"]["path"] == str(place.socket_dir)
                volume["hostPath"]["path"] = "/run/migrator"
        args = spec["containers"][0].pop("args")
        was_args = original["containers"][0].pop("args")
        changed = {a.split("=")[0] for a, b in zip(args, was_args) if a != b}
        assert len(args) == len(was_args)
        assert changed <= {"--listen", "--source", "--memory", "--hugepage-size"}, changed
        if role == "guest":  # "size"
            for part in ("requests", "limits"):
                assert spec["containers"][0]["resources"][part].pop("hugepages-1Gi") == "1Gi"
                original["containers"][0]["resources"][part].pop("hugepages-1Gi")
        assert spec == original, role


def test_the_source_url_keeps_the_services_name_and_the_listens_stay_on_loopback(tmp_path):
    daemons, _ = kube.variant(_place(tmp_path))
    args = {_spec(d)["containers"][0]["args"][0]: _spec(d)["containers"][0]["args"]
            for d in daemons}
    assert f"--source=https://{kube.SOURCE_HOST}:18470" in args["dest"]
    assert "--listen=127.0.0.1:18470" in args["source"]
    assert "--listen=127.0.0.1:18471" in args["dest"]


def test_on_2m_pages_the_pods_ask_for_hugepages_2mi(tmp_path):
    daemons, guest = kube.variant(_place(tmp_path, size="2M"))
    dest = _spec(daemons[1])["containers"][0]
    assert "--hugepage-size=2M" in dest["args"]
    assert dest["resources"]["limits"]["hugepages-2Mi"] == "2Mi"
    assert guest[0]["spec"]["containers"][0]["resources"]["limits"]["hugepages-2Mi"] == "1Gi"


def test_an_unknown_kind_is_refused_with_what_to_do(tmp_path, monkeypatch):
    docs = kube.manifests() + [{"kind": "StatefulSet", "metadata": {"name": "x"}}]
    monkeypatch.setattr(kube, "manifests", lambda: docs)
    with pytest.raises(ValueError, match="StatefulSet.*deploy/deploycheck/kube.py"):
        kube.variant(_place(tmp_path))


def test_deploy_readme_lists_every_difference_of_the_variant():
    guide = (DEPLOY / "README.md").read_text()
    section = re.search(r"^### Played with podman\n(.*?)(?=^##)", guide, re.S | re.M)
    assert section, "deploy/README.md has no 'Played with podman' section"
    for key in kube.DIFFERENCES:
        assert f"**{key}**" in section.group(1), key
