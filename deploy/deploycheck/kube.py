"""deploy/k8s/ played by `podman kube play` on one node: the manifests, changed only where podman
(4.3, Debian 12) or this single shared host cannot do what a cluster does. Every change is one
entry of DIFFERENCES, which deploy/README.md lists too."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import yaml

from .podman import REPO

K8S = REPO / "deploy" / "k8s"
SOURCE_HOST = "migrator-source.migrator.svc"

# What the single-node variant changes, and why: kept in step with deploy/README.md.
DIFFERENCES = {
    "namespace": "Namespace, Services and ServiceMonitors are not played: podman has no "
                 "namespaces, cluster DNS or Prometheus Operator; the destination pod mounts an "
                 f"/etc/hosts naming {SOURCE_HOST} 127.0.0.1 (hostPath; pods are played with "
                 "--no-hosts) in place of the Service, since podman 4.3 ignores hostAliases on "
                 "the host network",
    "daemonset": "the destination DaemonSet and the guest Job become Pods (podman 4.3 plays "
                 "only Pod and Deployment)",
    "network": "every pod uses hostNetwork and listens on 127.0.0.1 on free ports (pods have "
               "no pod network on this host, and two runs must not collide), not "
               "0.0.0.0:8470/8471; containerPort entries are dropped (podman 4.3 refuses port "
               "mappings on the host network)",
    "secrets": "the Secrets migrator-token and migrator-tls are hostPath directories holding the "
               "same keys with the same modes (podman 4.3 mounts no Secret volume)",
    "socket": "the guest socket's hostPath is a directory of this run, not /run/migrator",
    "image": "image: the one this run built (no registry)",
    "size": "the guest image is --memory=1GiB and the guest asks for hugepages-1Gi: 1Gi (the "
            "manifests: 4GiB), so that a run fits beside other work on one small node",
    "probes": "startup, readiness and liveness probes are dropped: podman runs an httpGet "
              "probe as curl inside the container, which the image does not have, and "
              "cannot send HTTPS probes",
}


@dataclass(frozen=True)
class Place:
    """Where this run's pods find each other and their files."""

    image: str
    source_port: int
    dest_port: int
    secrets: dict[str, Path]  # "source/migrator-token" -> the directory standing in for it
    socket_dir: Path
    hosts_file: Path  # /etc/hosts of the destination pod: the source Service's name
    memory: str = "1GiB"
    hugepages: str = "1Gi"
    hugepage_size: str = "1G"
    label: str = ""


def manifests() -> list[dict]:
    """The documents `kubectl apply -k deploy/k8s` applies, then the example guest Job."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for name in [*kustomization["resources"], "examples/guest-job.yaml"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def _arg(args: list[str], flag: str, value: str) -> list[str]:
    if not any(a.startswith(f"{flag}=") for a in args):
        raise ValueError(f"deploy/k8s: {flag}= is missing from {args}")
    return [f"{flag}={value}" if a.startswith(f"{flag}=") else a for a in args]


def _pod(name: str, template: dict, restart: str | None = None) -> dict:
    spec = copy.deepcopy(template["spec"])
    if restart:
        spec["restartPolicy"] = restart
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": dict(template["metadata"].get("labels", {})),
                         "annotations": dict(template["metadata"].get("annotations", {}))},
            "spec": spec}


def _localize(spec: dict, place: Place) -> None:
    """The changes every pod gets: host network, no probes, Secrets and the socket as
    hostPath, this run's image."""
    spec["hostNetwork"] = True
    role = spec["containers"][0]["args"][0]
    for volume in spec.get("volumes", []):
        secret = volume.pop("secret", None)
        if secret:
            where = place.secrets[f"{role}/{secret['secretName']}"]
            volume["hostPath"] = {"path": str(where), "type": "Directory"}
        elif volume.get("hostPath", {}).get("path") == "/run/migrator":
            volume["hostPath"]["path"] = str(place.socket_dir)
    for c in spec["containers"]:
        c.pop("ports", None)  # with hostNetwork podman 4.3 refuses port mappings
        c["image"] = place.image
        c["imagePullPolicy"] = "Never"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            c.pop(probe, None)


def _hugepages(resources: dict, place: Place, guest: bool) -> None:
    """The manifests ask for hugepages-1Gi; a run on 2 MiB pages asks for hugepages-2Mi, and
    the guest for as much as its image."""
    key = {"1G": "hugepages-1Gi", "2M": "hugepages-2Mi"}[place.hugepage_size]
    for part in ("requests", "limits"):
        amount = resources[part].pop("hugepages-1Gi")
        if guest:
            amount = place.hugepages
        elif place.hugepage_size == "2M":
            amount = "2Mi"  # the destination's HGM probe borrows one page
        resources[part][key] = amount


def variant(place: Place) -> tuple[list[dict], list[dict]]:
    """(the daemons' objects, the guest's Pod) for podman kube play."""
    daemons, guest = [], []
    source_url = f"https://{SOURCE_HOST}:{place.source_port}"
    for doc in manifests():
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind in ("Namespace", "Service", "ServiceMonitor", "Secret"):
            continue
        if kind == "Deployment":
            out = copy.deepcopy(doc)
            out["metadata"].pop("namespace", None)
            spec = out["spec"]["template"]["spec"]
        elif kind == "DaemonSet":
            out = _pod(name, doc["spec"]["template"])
            spec = out["spec"]
        elif kind == "Job":
            out = _pod(name, doc["spec"]["template"], restart="Never")
            spec = out["spec"]
        else:
            raise ValueError(f"deploy/k8s: no single-node counterpart for kind {kind} ({name}): "
                             f"add one to deploy/deploycheck/kube.py and to deploy/README.md")
        if place.label:  # podman labels a Deployment's pods with its template's labels
            key, _, value = place.label.partition("=")
            for meta in (out["metadata"], out["spec"].get("template", {}).get("metadata")):
                if meta is not None:
                    meta.setdefault("labels", {})[key] = value
        _localize(spec, place)
        container = spec["containers"][0]
        args = container["args"]
        if args[0] == "source":
            args = _arg(args, "--listen", f"127.0.0.1:{place.source_port}")
            args = _arg(args, "--memory", place.memory)
        elif args[0] == "dest":
            args = _arg(args, "--listen", f"127.0.0.1:{place.dest_port}")
            args = _arg(args, "--source", source_url)
            args = _arg(args, "--hugepage-size", place.hugepage_size)
            spec["volumes"].append({"name": "hosts", "hostPath": {"path": str(place.hosts_file),
                                                                  "type": "File"}})
            container["volumeMounts"].append({"name": "hosts", "mountPath": "/etc/hosts",
                                              "readOnly": True})
        if args[0] in ("dest", "guest"):
            _hugepages(container["resources"], place, guest=args[0] == "guest")
        container["args"] = args
        (guest if args[0] == "guest" else daemons).append(out)
    return daemons, guest


def dump(docs: list[dict], path: Path) -> Path:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path
