"""deploy/systemd: units that systemd accepts, hardened, running commands the CLI accepts."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .argv import env_file, option, parse, systemd_exec
from .syscalls import allowed_by
from .conftest import DEPLOY

SYSTEMD = DEPLOY / "systemd"
UNITS = sorted(p.name for p in SYSTEMD.glob("*.service"))
DAEMONS = ("migrator-source.service", "migrator-dest.service")
# `systemd-analyze security` scores 0 (locked down) to 10 (exposed); "OK" is below 4.5.
MAX_EXPOSURE = 2.0


def _analyze() -> str:
    path = shutil.which("systemd-analyze")
    assert path, "systemd-analyze is missing: install the systemd package (.ci/system-deps)"
    return path


def _unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str  # keys are case-sensitive
    cp.read_string((SYSTEMD / name).read_text())
    return cp


def _exec_lines(name: str) -> list[str]:
    return re.findall(r"^Exec\w+=(.*)$", (SYSTEMD / name).read_text(), re.M)


def _env(name: str) -> dict[str, str]:
    env = {}
    for line in re.findall(r"^EnvironmentFile=-?(\S+)$", (SYSTEMD / name).read_text(), re.M):
        env.update(env_file((SYSTEMD / "env" / Path(line).name).read_text()))
    return env


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A file system root for `systemd-analyze --root`: the host's own units plus ours, and a
    stand-in for every program our units run (verify checks that each one exists)."""
    root = tmp_path_factory.mktemp("root")
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for name in UNITS:
        shutil.copy(SYSTEMD / name, root / "etc/systemd/system" / name)
        for line in _exec_lines(name):
            program = root / line.lstrip("-@+!:").split()[0].lstrip("/")
            program.parent.mkdir(parents=True, exist_ok=True)
            program.write_text("#!/bin/sh\n")
            program.chmod(0o755)
    return root


def test_there_are_units_for_both_daemons_and_the_hugepage_reservation():
    assert set(UNITS) == {*DAEMONS, "migrator-hugepages.service"}


@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_verify_accepts_the_unit_without_a_word(root, name):
    out = subprocess.run([_analyze(), "verify", f"--root={root}", name],
                         capture_output=True, text=True, timeout=30)
    # verify exits 0 even for unknown keys; it only warns. Any output is a finding.
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), (
        f"systemd-analyze verify {name}:\n{out.stdout}{out.stderr}")


@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_security_rates_the_unit_locked_down(root, name):
    out = subprocess.run([_analyze(), "security", "--offline=yes", f"--root={root}",
                          f"--threshold={int(MAX_EXPOSURE * 10)}", name],
                         capture_output=True, text=True, timeout=30)
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", out.stdout)
    assert m, out.stdout + out.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, out.stdout


@pytest.mark.parametrize("name", UNITS)
def test_the_unit_holds_no_capability_and_restarts_or_runs_once(name):
    service = _unit(name)["Service"]
    assert service["CapabilityBoundingSet"] == "" and service["AmbientCapabilities"] == ""
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    if name in DAEMONS:
        assert service["User"] == "migrator" and service["Restart"] == "on-failure"
        assert service["ProtectKernelTunables"] == "yes" and service["PrivateDevices"] == "yes"
    else:
        # It writes /sys/kernel/mm/hugepages/*/nr_hugepages, so /sys must stay writable.
        assert service["Type"] == "oneshot" and service["User"] == "root"
        assert "ProtectKernelTunables" not in service


def test_the_daemons_take_the_token_from_an_environment_file_and_refuse_to_start_without():
    assert env_file((SYSTEMD / "env/migrator.env").read_text()) == {"MIGRATOR_TOKEN": ""}
    for name in DAEMONS:
        text = (SYSTEMD / name).read_text()
        assert "EnvironmentFile=/etc/migrator/migrator.env" in text
        pre = _unit(name)["Service"]["ExecStartPre"]
        # The check must see the variable at run time: $$ keeps systemd from expanding it.
        assert "$${MIGRATOR_TOKEN}" in pre
        script = pre.split("-c ", 1)[1].strip("'").replace("$$", "$")
        for token, status in (("", 1), ("s3cret", 0)):
            run = subprocess.run(["/bin/sh", "-c", script], env={"MIGRATOR_TOKEN": token},
                                 capture_output=True, text=True)
            assert run.returncode == status, run.stderr


@pytest.mark.parametrize("name", UNITS)
def test_execstart_with_the_example_settings_is_accepted_by_the_cli(name):
    line = _unit(name)["Service"]["ExecStart"]
    argv = systemd_exec(line, _env(name))
    assert argv[0] == "/opt/migrator/bin/migrator"
    args = parse(argv[1:])
    assert args.command == {"migrator-source.service": "source",
                            "migrator-dest.service": "dest",
                            "migrator-hugepages.service": "host"}[name]


def test_the_destination_serves_guests_in_its_runtime_directory_and_follows_the_reservation():
    unit = _unit("migrator-dest.service")
    argv = systemd_exec(unit["Service"]["ExecStart"], _env("migrator-dest.service"))
    socket = Path(option(argv, "--guest-socket"))
    assert socket.parent == Path("/run") / unit["Service"]["RuntimeDirectory"]
    assert "migrator-hugepages.service" in unit["Unit"]["After"].split()
    assert "migrator-hugepages.service" in unit["Unit"]["Wants"].split()
    before = _unit("migrator-hugepages.service")["Unit"]["Before"].split()
    assert {"migrator-dest.service", "kubelet.service"} <= set(before)


def test_tls_settings_pair_up_between_source_and_destination():
    source = systemd_exec(_unit("migrator-source.service")["Service"]["ExecStart"],
                          _env("migrator-source.service"))
    dest = systemd_exec(_unit("migrator-dest.service")["Service"]["ExecStart"],
                        _env("migrator-dest.service"))
    for argv in (source, dest):
        assert (option(argv, "--tls-cert") is None) == (option(argv, "--tls-key") is None)
    assert option(source, "--tls-cert"), "the example source serves TLS"
    assert option(dest, "--source").startswith("https://") and option(dest, "--tls-ca")
    listen_port = option(source, "--listen").rsplit(":", 1)[1]
    assert option(dest, "--source").rstrip("/").endswith(f":{listen_port}")


@pytest.mark.parametrize("name", UNITS)
def test_the_syscall_filter_keeps_python_and_the_destinations_calls(name):
    """The static half; test_least_privilege traces what the daemons really call."""
    allowed = allowed_by((SYSTEMD / name).read_text())
    needed = {"execve", "mmap", "munmap", "mprotect", "futex", "openat", "read", "write",
              "ioctl", "madvise", "memfd_create", "fallocate", "recvmsg", "sendmsg"}
    assert needed <= allowed, f"filtered out: {sorted(needed - allowed)}"


def test_sysusers_makes_the_migrator_user_and_the_userfaultfd_group():
    lines = [line.split() for line in (SYSTEMD / "migrator.sysusers.conf").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert ["u", "migrator"] == lines[0][:2]
    assert ["g", "userfaultfd", "-"] in lines and ["m", "migrator", "userfaultfd"] in lines
    rule = (SYSTEMD / "60-userfaultfd.rules").read_text()
    assert re.search(r'^KERNEL=="userfaultfd".*GROUP="userfaultfd", MODE="0660"$', rule, re.M)
