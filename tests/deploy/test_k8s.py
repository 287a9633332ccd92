"""deploy/k8s: schema-valid at a fixed Kubernetes version (kubernetes-validate, strict), and
consistent with the daemons' flags and ports, the hugepage rules, the Secrets and the scrape
configuration."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from .argv import listen_port, option, parse
from .conftest import DEPLOY, k8s_by_kind

K8S = DEPLOY / "k8s"
K8S_VERSION = "1.31.0"
# Not Kubernetes API kinds, so kubernetes-validate has no schema for them: ServiceMonitor is a
# CRD of the Prometheus Operator, Kustomization is kustomize's file. Both are checked by hand
# below, on the fields these files use.
NO_SCHEMA = {"ServiceMonitor", "Kustomization"}
_SUFFIX = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": Decimal("0.001")}


def quantity(text) -> Decimal:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T|m|)", str(text))
    assert m, f"not a Kubernetes quantity: {text!r}"
    return Decimal(m.group(1)) * _SUFFIX[m.group(2)]


def _pod_templates(documents) -> list[tuple[str, dict]]:
    out = []
    for _, d in documents:
        spec = d.get("spec", {})
        if d["kind"] in ("Deployment", "DaemonSet"):
            out.append((d["metadata"]["name"], spec["template"]))
        elif d["kind"] == "Job":
            out.append((d["metadata"]["name"], spec["template"]))
    return out


def _workload(documents, component: str) -> dict:
    (w,) = [d for _, d in documents if d["kind"] in ("Deployment", "DaemonSet")
            and d["metadata"]["labels"]["app.kubernetes.io/component"] == component]
    return w


def _container(workload: dict) -> dict:
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    return c


def _service(documents, component: str) -> dict:
    (s,) = [d for d in k8s_by_kind(documents, "Service")
            if d["spec"]["selector"]["app.kubernetes.io/component"] == component]
    return s


def _mount_of(template: dict, container: dict, path: str) -> dict:
    """The volume that the container mounts at the directory holding path."""
    for mount in container["volumeMounts"]:
        if Path(path).parent == Path(mount["mountPath"]):
            return next(v for v in template["spec"]["volumes"] if v["name"] == mount["name"])
    raise AssertionError(f"{container['name']}: nothing mounted where {path} lives")


def test_every_manifest_is_valid_for_the_pinned_kubernetes_version(k8s_documents):
    checked = 0
    for path, doc in k8s_documents:
        if doc["kind"] in NO_SCHEMA:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            pytest.fail(f"{path.relative_to(DEPLOY)}: {doc['kind']}/{doc['metadata']['name']}: "
                        f"{where}: {e.message}")
        checked += 1
    assert checked >= 7


def test_the_kinds_asked_for_are_there(k8s_documents):
    kinds = {(d["kind"], d.get("metadata", {}).get("name")) for _, d in k8s_documents}
    assert {("Deployment", "migrator-source"), ("Service", "migrator-source"),
            ("DaemonSet", "migrator-dest"), ("Service", "migrator-dest"),
            ("Secret", "migrator-token"), ("ServiceMonitor", "migrator-source"),
            ("ServiceMonitor", "migrator-dest"), ("Namespace", "migrator")} <= kinds


def test_kustomization_applies_every_manifest_but_the_token_and_the_examples():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    top = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == top - {"token-secret.yaml"}


def test_containers_run_commands_the_cli_accepts(k8s_documents):
    for name, template in _pod_templates(k8s_documents):
        for c in template["spec"]["containers"]:
            args = parse(c["args"])
            assert args.command in ("source", "dest", "guest", "sweep"), name


def test_container_ports_probes_and_services_follow_the_listen_flag(k8s_documents):
    for component in ("source", "dest"):
        workload = _workload(k8s_documents, component)
        container = _container(workload)
        port = listen_port(parse(container["args"]))
        (declared,) = container["ports"]
        assert declared["containerPort"] == port
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = container[probe]["httpGet"]
            assert get["path"] == "/healthz" and get["port"] == declared["name"]
            tls = option(container["args"], "--tls-cert") is not None
            assert get["scheme"] == ("HTTPS" if tls else "HTTP")
        (service_port,) = _service(k8s_documents, component)["spec"]["ports"]
        assert service_port["port"] == port and service_port["targetPort"] == declared["name"]
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port)
        assert annotations["prometheus.io/path"] == "/metrics"


def test_the_destination_reaches_the_source_service_by_name_and_port(k8s_documents):
    dest = _container(_workload(k8s_documents, "dest"))["args"]
    source = _container(_workload(k8s_documents, "source"))["args"]
    service = _service(k8s_documents, "source")
    url = urlsplit(option(dest, "--source"))
    assert url.hostname == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert url.port == service["spec"]["ports"][0]["port"] == listen_port(parse(source))
    # TLS on one end means TLS on the other.
    assert (url.scheme == "https") == (option(source, "--tls-cert") is not None)
    assert (url.scheme == "https") == (option(dest, "--tls-ca") is not None)


def test_token_and_tls_files_come_from_the_secrets(k8s_documents):
    for component in ("source", "dest"):
        workload = _workload(k8s_documents, component)
        template, container = workload["spec"]["template"], _container(workload)
        args = container["args"]
        token = _mount_of(template, container, option(args, "--token-file"))
        assert token["secret"]["secretName"] == "migrator-token"
        assert Path(option(args, "--token-file")).name == "token"
        for flag, key in (("--tls-cert", "tls.crt"), ("--tls-key", "tls.key"),
                          ("--tls-ca", "ca.crt")):
            if option(args, flag):
                assert Path(option(args, flag)).name == key
                assert _mount_of(template, container, option(args, flag))["secret"][
                    "secretName"] == "migrator-tls"
    (secret,) = k8s_by_kind(k8s_documents, "Secret")
    assert set(secret["stringData"]) == {"token"}


def test_hugepage_resources_follow_the_kubernetes_rules(k8s_documents):
    """Requests equal limits (a limit alone implies the request); a container asking for huge
    pages also asks for memory or cpu; the destination may borrow one page of its size."""
    seen = 0
    for name, template in _pod_templates(k8s_documents):
        for c in template["spec"]["containers"]:
            requests = c.get("resources", {}).get("requests", {})
            limits = c.get("resources", {}).get("limits", {})
            huge = {k for k in {*requests, *limits} if k.startswith("hugepages-")}
            for key in huge:
                seen += 1
                assert key in limits, f"{name}: {key} needs a limit"
                if key in requests:
                    assert quantity(requests[key]) == quantity(limits[key]), f"{name}: {key}"
                size = quantity(key.removeprefix("hugepages-"))
                assert quantity(limits[key]) % size == 0, f"{name}: whole pages of {key}"
            if huge:
                assert {"memory", "cpu"} & {*requests, *limits}, name
    assert seen >= 2
    dest = _container(_workload(k8s_documents, "dest"))
    size = parse(dest["args"]).hugepage_size
    label = {2 << 20: "hugepages-2Mi", 1 << 30: "hugepages-1Gi"}[size]
    assert quantity(dest["resources"]["limits"][label]) >= size


def test_the_source_is_unprivileged_and_the_destination_drops_every_capability(k8s_documents):
    source = _workload(k8s_documents, "source")["spec"]["template"]["spec"]
    assert source["securityContext"]["runAsNonRoot"] is True
    for component in ("source", "dest"):
        context = _container(_workload(k8s_documents, component))["securityContext"]
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert not context.get("privileged")
    dest = _workload(k8s_documents, "dest")["spec"]["template"]
    socket = option(_container(_workload(k8s_documents, "dest"))["args"], "--guest-socket")
    volume = _mount_of(dest, _container(_workload(k8s_documents, "dest")), socket)
    assert volume["hostPath"]["path"] == str(Path(socket).parent)
    (namespace,) = k8s_by_kind(k8s_documents, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_the_example_guest_uses_the_destination_socket_on_its_node(k8s_documents):
    (job,) = [j for j in k8s_by_kind(k8s_documents, "Job")
              if j["metadata"]["name"] == "migrator-guest"]
    template = job["spec"]["template"]
    (guest,) = template["spec"]["containers"]
    dest_workload = _workload(k8s_documents, "dest")
    dest = _container(dest_workload)
    socket = option(dest["args"], "--guest-socket")
    assert option(guest["args"], "--dest-socket") == socket
    assert _mount_of(template, guest, socket)["hostPath"]["path"] == str(Path(socket).parent)
    assert template["spec"]["nodeSelector"].items() >= \
        dest_workload["spec"]["template"]["spec"]["nodeSelector"].items()


def test_service_monitors_scrape_each_service_port_with_the_token_over_tls(k8s_documents):
    """The CRD by hand: selector matches a Service, the port name exists on it, the bearer token
    and the CA come from the Secrets the pods use, serverName is the Service's DNS name."""
    monitors = k8s_by_kind(k8s_documents, "ServiceMonitor")
    assert {m["apiVersion"] for m in monitors} == {"monitoring.coreos.com/v1"}
    components = set()
    for monitor in monitors:
        spec = monitor["spec"]
        wanted = spec["selector"]["matchLabels"]
        services = [s for s in k8s_by_kind(k8s_documents, "Service")
                    if wanted.items() <= s["metadata"]["labels"].items()]
        assert len(services) == 1, monitor["metadata"]["name"]
        service = services[0]
        components.add(service["metadata"]["labels"]["app.kubernetes.io/component"])
        assert spec["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
        assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
        (endpoint,) = spec["endpoints"]
        assert set(endpoint) <= {"port", "path", "scheme", "interval", "authorization",
                                 "tlsConfig"}
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert endpoint["path"] == "/metrics" and endpoint["scheme"] == "https"
        assert quantity(endpoint["interval"].removesuffix("s")) > 0
        auth = endpoint["authorization"]
        assert auth["type"] == "Bearer"
        assert auth["credentials"] == {"name": "migrator-token", "key": "token"}
        tls = endpoint["tlsConfig"]
        assert tls["ca"] == {"secret": {"name": "migrator-tls", "key": "ca.crt"}}
        name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
        assert tls["serverName"] == f"{name}.{namespace}.svc"
    assert components == {"source", "dest"}


def test_the_sweep_job_runs_one_point_of_its_grid_per_index(k8s_documents):
    """An Indexed Job with as many completions as its ConfigMap's grid has points, each pod
    running `migrator sweep` (which reads JOB_COMPLETION_INDEX) into a results tree."""
    from migrator.sweep import parse

    (job,) = [j for j in k8s_by_kind(k8s_documents, "Job")
              if j["metadata"]["name"] == "migrator-sweep"]
    (config,) = [c for c in k8s_by_kind(k8s_documents, "ConfigMap")
                 if c["metadata"]["name"] == "migrator-sweep-spec"]
    spec = parse(yaml.safe_load(config["data"]["grid.yaml"]))
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == len(spec.points())
    template = job["spec"]["template"]
    (c,) = template["spec"]["containers"]
    assert c["args"][:2] == ["sweep", "/etc/migrator/sweep/grid.yaml"]
    assert any(a.startswith("--out=/results/") for a in c["args"])
    assert "hugepages-1Gi" in c["resources"]["limits"]
    assert spec.axes["hugepage_size"] == ["1G"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert volumes[mounts["/etc/migrator/sweep"]]["configMap"]["name"] == "migrator-sweep-spec"
    assert "hostPath" in volumes[mounts["/results"]]
