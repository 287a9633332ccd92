"""deploy/systemd's units started by a real systemd: a container with systemd as PID 1 stands in
for a host. The install commands are deploy/README.md's own ("## systemd" block, but for its
`systemctl enable` lines), the settings are edited as that section says, both units are started,
a guest runs as `migrator` with a /dev/userfaultfd its group may open (what the udev rule
grants), and both units are stopped.

The container is privileged because it plays a host: systemd sets up each unit's sandbox
(ProtectSystem=, PrivateUsers=, PrivateDevices=, the seccomp filter, ...) with namespaces and
mounts that need CAP_SYS_ADMIN. migrator-hugepages.service is installed but not started: it
would grow the host's pools and never give them back; the run reserves the pool itself."""

from __future__ import annotations

import os
import re
from pathlib import Path

from . import probe
from .podman import REPO, Run

CONTAINERFILE = Path(__file__).with_name("systemd.Containerfile")
GUIDE = REPO / "deploy" / "README.md"
_DONE = re.compile(r"migration complete: verified (\d+) pages, 0 mismatched")


def install_commands() -> str:
    """deploy/README.md's systemd install block, without its `systemctl enable` lines."""
    section = GUIDE.read_text().split("\n## systemd\n", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return "\n".join(line for line in block.replace("\\\n", " ").splitlines()
                     if not line.startswith("systemctl enable"))


def _settings(source_port: int, dest_port: int, token: str) -> str:
    """The edits deploy/README.md asks for: the token; no TLS (OPTS empty, http://); loopback;
    a 64 MiB image; hugepage mode on 2 MiB pages."""
    edits = {
        "migrator.env": {"MIGRATOR_TOKEN": token},
        "source.env": {"MIGRATOR_SOURCE_LISTEN": f"127.0.0.1:{source_port}",
                       "MIGRATOR_SOURCE_MEMORY": "64MiB", "MIGRATOR_SOURCE_OPTS": ""},
        "dest.env": {"MIGRATOR_DEST_LISTEN": f"127.0.0.1:{dest_port}",
                     "MIGRATOR_DEST_SOURCE": f"http://127.0.0.1:{source_port}",
                     "MIGRATOR_DEST_MODE": "hugepage", "MIGRATOR_DEST_HUGEPAGE_SIZE": "2M",
                     "MIGRATOR_DEST_OPTS": ""},
    }
    return "\n".join(f"sed -i 's|^{k}=.*|{k}={v}|' /etc/migrator/{f}"
                     for f, kv in edits.items() for k, v in kv.items())


def _guest_as_migrator() -> str:
    """A guest as user migrator, in a mount namespace where /dev/userfaultfd is a node of group
    userfaultfd, 0660 (what 60-userfaultfd.rules makes udev do; the host's node stays as is)."""
    dev = os.stat("/dev/userfaultfd").st_rdev
    node = "/dev/userfaultfd-migrator"
    inner = (f"mknod -m 0660 {node} c {os.major(dev)} {os.minor(dev)} && "
             f"chgrp userfaultfd {node} && mount --bind {node} /dev/userfaultfd && rm {node} && "
             "exec runuser -u migrator -- /opt/migrator/bin/migrator guest "
             "--dest-socket /run/migrator/guest.sock --vcpus 2 --accesses 2000")
    return f"unshare --mount --propagation=private sh -c '{inner}'"


def _status(podman: Run, c: str, unit: str) -> dict:
    """What systemd made of the unit's main process: user, capabilities, no_new_privs,
    seccomp (read from /proc inside the container)."""
    pid = podman("exec", c, "systemctl", "show", "-p", "MainPID", "--value", unit).stdout.strip()
    text = podman("exec", c, "cat", f"/proc/{pid}/status").stdout
    status = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
    user = podman("exec", c, "id", "-nu", status["Uid"].split()[1]).stdout.strip()
    return {"user": user, "CapEff": int(status["CapEff"], 16), "CapBnd": int(status["CapBnd"], 16),
            "no_new_privs": status["NoNewPrivs"].strip() == "1",
            "seccomp": status["Seccomp"].strip()}


def run(podman: Run, base: str, migrator_image: str) -> dict:
    image = f"localhost/migrator-systemd:check-{podman.id}"
    podman("build", "--network=none", "--layers=false", "--pull=never", "-f", str(CONTAINERFILE),
           "--build-arg", f"BASE={base}", "--build-arg", f"MIGRATOR={migrator_image}",
           "--label", podman.label, "-t", image, str(CONTAINERFILE.parent), timeout=900)
    podman.images.append(image)
    c = podman("run", "-d", f"--name=migrator-systemd-{podman.id}", "--label", podman.label,
               "--systemd=always", "--privileged", "--network=host",
               "-v", f"{REPO / 'deploy'}:/src/deploy:ro", image).stdout.strip()
    probe.wait("systemd in the container", lambda: podman(
        "exec", c, "systemctl", "is-system-running", check=False).stdout.strip()
        in ("running", "degraded"), 60)
    source_port, dest_port = probe.free_port(), probe.free_port()
    script = "\n".join(["set -eu", "cd /src", install_commands(),
                        _settings(source_port, dest_port, f"deploy-check-{podman.id}"),
                        "systemctl enable --now migrator-source.service"])
    podman("exec", "-i", c, "sh", input=script)
    probe.wait("migrator-source.service /healthz",
               lambda: probe.healthy(f"http://127.0.0.1:{source_port}"), 120)
    podman("exec", c, "systemctl", "enable", "--now", "migrator-dest.service")
    probe.wait("migrator-dest.service /healthz",
               lambda: probe.healthy(f"http://127.0.0.1:{dest_port}"), 120)
    confined = {u: _status(podman, c, u) for u in ("migrator-source.service",
                                                   "migrator-dest.service")}
    guest = podman("exec", c, "sh", "-c", _guest_as_migrator(), check=False, timeout=600)
    done = _DONE.search(guest.stdout)
    podman("exec", c, "systemctl", "stop", "migrator-source.service", "migrator-dest.service")
    states = podman("exec", c, "systemctl", "is-active", "migrator-source.service",
                    "migrator-dest.service", check=False).stdout.split()
    journal = podman("exec", c, "journalctl", "--no-pager", "-u", "migrator-source.service",
                     "-u", "migrator-dest.service").stdout
    if guest.returncode or not done:
        raise RuntimeError(f"the guest under the systemd units exited {guest.returncode}:\n"
                           f"{(guest.stdout + guest.stderr)[-3000:]}\n{journal[-3000:]}")
    if states != ["inactive", "inactive"] or "Traceback" in journal:
        raise RuntimeError(f"the units did not stop cleanly ({states}):\n{journal[-3000:]}")
    return {"verified_pages": int(done.group(1)), "confinement": confined,
            "stopped": states, "journal_lines": len(journal.splitlines())}
