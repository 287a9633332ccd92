"""What a running container may do, read from the kernel (/proc/PID/status of its process) and
from podman: the privileges deploy/README.md says each part needs, and no more."""

from __future__ import annotations

from pathlib import Path

from .podman import Run


def of(podman: Run, container: str) -> dict:
    """uid, capability sets, no_new_privs, seccomp, privileged, read-only root and devices of a
    container: from the kernel while it runs, from what podman set up once it has exited."""
    info = podman.inspect("container", container)
    host = info["HostConfig"]
    pid = info["State"]["Pid"]
    if pid:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        status = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
        kernel = {
            "uid": int(status["Uid"].split()[1]),
            "caps": {k: int(status[k], 16) for k in ("CapPrm", "CapEff", "CapBnd", "CapAmb")},
            "no_new_privs": status["NoNewPrivs"].strip() == "1",
            "seccomp": status["Seccomp"].strip(),  # 2: a filter is in force
            "from": "kernel",
        }
    else:
        options = host.get("SecurityOpt") or []
        kernel = {
            "uid": int((info["Config"].get("User") or "0").split(":")[0]),
            "caps": {"CapEff": len(info.get("EffectiveCaps") or [])},
            "no_new_privs": any(o.startswith("no-new-privileges") for o in options),
            "seccomp": "0" if "seccomp=unconfined" in options else "2",
            "from": "podman inspect (exited)",
        }
    return {
        "name": info["Name"],
        **kernel,
        "privileged": bool(host.get("Privileged")),
        "read_only": bool(host.get("ReadonlyRootfs")),
        "devices": sorted(d.get("PathInContainer", "") for d in host.get("Devices") or []),
        "network": host.get("NetworkMode"),
    }


def problems(c: dict, devices: tuple[str, ...] = ()) -> list[str]:
    """What about c goes beyond the least privilege (no capability, no_new_privs, a seccomp
    filter, read-only root, not privileged, only the devices named)."""
    out = []
    held = {k: hex(v) for k, v in c["caps"].items() if v}
    if held:
        out.append(f"holds capabilities {held}")
    if not c["no_new_privs"]:
        out.append("no_new_privs is not set")
    if c["seccomp"] != "2":
        out.append(f"no seccomp filter (Seccomp: {c['seccomp']})")
    if c["privileged"]:
        out.append("is privileged")
    if not c["read_only"]:
        out.append("root file system is writable")
    if set(c["devices"]) != set(devices):
        out.append(f"devices {c['devices']}, expected {sorted(devices)}")
    return [f"{c['name']}: {p}" for p in out]
