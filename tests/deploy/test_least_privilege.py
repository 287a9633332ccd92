"""The privileges the deployment grants are enough: a real migration with every daemon confined
as deploy/ confines it, on the real kernel.

- source and destination: an ordinary uid (nobody), no capability in any set (bounding set
  empty), no_new_privs, and no writable+executable memory (MemoryDenyWriteExecute);
- guest: the same uid, no capability, and a /dev/userfaultfd it may open (what the udev rule of
  deploy/systemd grants), in a mount namespace of its own so the host's device stays as it is;
- under strace, neither daemon makes a system call that its unit's SystemCallFilter= drops;
- Prometheus: deploy/prometheus/prometheus.yml, pointed at these daemons, scrapes both with
  the bearer token;
- migrator-hugepages.service: root without any capability may resize a hugetlb pool.

Only what the kernel enforces is reproduced here; the unit's namespaces are systemd's (systemd is
not PID 1 on the machines this runs on).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from cffi_uffd import SIZE_2M
from helpers.daemons import stop_daemon
from migrator.host import pools

from .conftest import DEPLOY
from .syscalls import allowed_by, traced

UID = 65534  # nobody: as unprivileged as the `migrator` user of the units
CONFINED = Path(__file__).with_name("confined.py")
IMAGE = "64MiB"
IMAGE_PAGES_2M = (64 << 20) // SIZE_2M
TOKEN = "least-privilege-token"
_LISTENING = re.compile(r"source listening on (http://\S+?):? ")


def _drop() -> list[str]:
    return ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups",
            "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs"]


def _mdwe_supported() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(66, 0, 0, 0, 0) >= 0  # PR_GET_MDWE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check, proc: subprocess.Popen, log: Path, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come up (status {proc.poll()}):\n"
                                 f"{log.read_text(errors='replace')}")
        time.sleep(0.05)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def _assert_confined(proc: subprocess.Popen) -> None:
    status = _status(proc.pid)
    assert status["Uid"].split() == [str(UID)] * 4 and status["Gid"].split() == [str(UID)] * 4
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[caps], 16) == 0, f"{caps} {status[caps]}"
    assert status["NoNewPrivs"].strip() == "1"


@pytest.fixture(scope="module")
def workdir() -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another uid and to give the guest a device node")
    for tool in ("setpriv", "unshare", "mount", "mknod"):
        assert shutil.which(tool), f"{tool} is missing (util-linux, coreutils)"
    if not Path("/dev/userfaultfd").exists():
        pytest.skip("no /dev/userfaultfd (Linux < 6.1): the udev-rule setup does not apply")
    probe = subprocess.run([*_drop(), sys.executable, str(CONFINED), "--help"],
                           capture_output=True, text=True,
                           env={**os.environ, "MIGRATOR_TEST_MDWE": "0"})
    if probe.returncode:
        pytest.skip(f"uid {UID} cannot run this checkout's Python: {probe.stderr[-300:]}")
    # Not under pytest's tmp_path: its parents are root's alone, and nobody must get through.
    work = Path(tempfile.mkdtemp(prefix="migrator-least-privilege-"))
    work.chmod(0o755)
    (work / "token").write_text(TOKEN + "\n")
    (work / "token").chmod(0o644)
    yield work
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MIGRATOR_TOKEN"}
    env["MIGRATOR_TEST_MDWE"] = "1" if _mdwe_supported() else "0"
    return env


def _confined(work: Path, name: str, args: list[str], env: dict,
              trace: Path | None = None) -> subprocess.Popen:
    """A confined `migrator ARGS`; with trace, under `strace -f` (strace itself stays root, so
    the trace also shows setpriv's own calls before it executes Python: syscalls.traced()
    starts at that execve)."""
    log = work / f"{name}.log"
    strace = ["strace", "-f", "-qq", "-e", "signal=none", "-o", str(trace)] if trace else []
    with open(log, "wb") as out:
        proc = subprocess.Popen([*strace, *_drop(), sys.executable, str(CONFINED), *args],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work)
    proc.log_path = log  # type: ignore[attr-defined]
    return proc


def _stop_traced(proc: subprocess.Popen) -> None:
    """SIGTERM the daemon under strace (not strace: it would detach and leave it running)."""
    if proc.poll() is None:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        for child in children:
            os.kill(int(child), signal.SIGTERM)
    stop_daemon(proc)


def _source(work: Path, env: dict, name: str = "source",
            trace: Path | None = None) -> tuple[subprocess.Popen, str]:
    proc = _confined(work, name, ["source", "--listen", "127.0.0.1:0", "--memory", IMAGE,
                                  "--seed", "11", "--token-file", str(work / "token")],
                     env, trace)
    log = proc.log_path
    try:
        url = _wait("source", lambda: (m := _LISTENING.search(log.read_text())) and m.group(1),
                    proc, log)
        _wait("source /healthz", lambda: _healthy(url), proc, log)
    except BaseException:
        _stop_traced(proc) if trace else stop_daemon(proc)
        raise
    return proc, url


@pytest.fixture(scope="module")
def source(workdir, env):
    proc, url = _source(workdir, env)
    yield proc, url
    stop_daemon(proc)


@pytest.fixture(scope="module")
def pool_2m(workdir):
    with pools.reserved(SIZE_2M, IMAGE_PAGES_2M + 1) as got:
        if got < IMAGE_PAGES_2M + 1:
            pytest.skip(f"the kernel gave {got} of {IMAGE_PAGES_2M + 1} 2 MiB pages")
        yield


def _dest(work: Path, env: dict, source_url: str, mode: str,
          trace: Path | None = None) -> tuple[subprocess.Popen, str, str]:
    """A confined destination; returns (process, URL, guest socket)."""
    run = Path(tempfile.mkdtemp(prefix=f"run-{mode}-", dir=work))
    os.chown(run, UID, UID)
    run.chmod(0o700)
    port = _free_port()
    proc = _confined(work, run.name, [
        "dest", "--listen", f"127.0.0.1:{port}", "--source", source_url, "--mode", mode,
        "--hugepage-size", "2M", "--guest-socket", str(run / "guest.sock"),
        "--token-file", str(work / "token")], env, trace)
    url = f"http://127.0.0.1:{port}"
    _wait("dest /healthz", lambda: _healthy(url), proc, proc.log_path)
    return proc, url, str(run / "guest.sock")


def _guest(work: Path, socket_path: str) -> dict:
    """The guest as uid nobody, with its own /dev/userfaultfd node (char 10:257, nobody's 0600)
    bind-mounted over the host's in a private mount namespace."""
    node = work / f"userfaultfd-{time.monotonic_ns()}"
    dev = os.stat("/dev/userfaultfd").st_rdev
    script = (f"mknod -m 0600 {node} c {os.major(dev)} {os.minor(dev)} && "
              f"chown {UID}:{UID} {node} && mount --bind {node} /dev/userfaultfd && "
              f'exec "$@"')
    out = subprocess.run(
        ["unshare", "--mount", "--propagation=private", "sh", "-c", script, "guest",
         *_drop(), sys.executable, "-m", "migrator.cli", "guest", "--dest-socket", socket_path,
         "--vcpus", "2", "--accesses", "2000", "--write-ratio", "0.3", "--json"],
        capture_output=True, text=True, timeout=120)
    assert out.stdout.strip(), f"guest failed ({out.returncode}): {out.stderr}"
    return json.loads(out.stdout)


@pytest.mark.parametrize("mode", ["hgm", "hugepage"])
def test_a_migration_runs_with_no_capability_anywhere(workdir, env, source, request, mode):
    if mode == "hugepage":
        request.getfixturevalue("pool_2m")
    source_proc, source_url = source
    dest, _, guest_socket = _dest(workdir, env, source_url, mode)
    try:
        _assert_confined(source_proc)
        _assert_confined(dest)
        report = _guest(workdir, guest_socket)
        m = report["migration"]
        assert m["phase"] == "complete", m.get("error")
        assert m["verified_pages"] == m["pages_total"] and m["mismatched_pages"] == 0
        assert report["verify"]["mismatched_pages"] == 0 and report["verify"]["writes_lost"] == 0
        assert m["backing"] == ("hugetlb-2M" if mode == "hugepage" else m["backing"])
    finally:
        stop_daemon(dest)
    assert "Traceback" not in dest.log_path.read_text(errors="replace")


def _prometheus_query(url: str, query: str) -> list[dict]:
    q = urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=5) as r:
        return json.load(r)["data"]["result"]


@pytest.mark.timeout(90)
def test_the_deployed_prometheus_config_scrapes_both_confined_daemons(workdir, env, source,
                                                                       tmp_path):
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is missing: install the prometheus package (.ci/system-deps)"
    source_proc, source_url = source
    dest, dest_url, _ = _dest(workdir, env, source_url, "hgm")
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    where = {"source:8470": urllib.parse.urlsplit(source_url).netloc,
             "dest:8471": urllib.parse.urlsplit(dest_url).netloc}
    for job in config["scrape_configs"]:
        job["authorization"]["credentials_file"] = str(workdir / "token")
        for sc in job["static_configs"]:
            sc["targets"] = [where[t] for t in sc["targets"]]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    web = f"127.0.0.1:{_free_port()}"
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        prom = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'data'}",
                                 f"--web.listen-address={web}"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        def both_up():
            try:
                up = _prometheus_query(f"http://{web}", "up")
            except OSError:
                return None
            jobs = {r["metric"]["job"]: r["value"][1] for r in up}
            return jobs if jobs == {"migrator-source": "1", "migrator-dest": "1"} else None

        # up is 0 for a target that answers 401: both 1 means the token got through.
        _wait("both scrape targets up", both_up, prom, log, timeout=30)
        samples = _prometheus_query(f"http://{web}",
                                    'scrape_samples_scraped{job="migrator-source"}')
        assert float(samples[0]["value"][1]) > 0, samples
    finally:
        stop_daemon(prom)
        stop_daemon(dest)


def test_root_without_capabilities_may_resize_a_hugetlb_pool():
    """migrator-hugepages.service runs as root with an empty capability bounding set: writing
    nr_hugepages is a plain write for the file's owner. Shown by writing a pool's current size
    back (a no-op for the kernel), from a root process that holds no capability."""
    dirs = sorted(Path("/sys/kernel/mm/hugepages").glob("hugepages-*kB"),
                  key=lambda d: int(d.name[10:-2]), reverse=True)  # 1 GiB first: rarely in use
    if os.geteuid() != 0:
        pytest.skip("needs root: the pool files are root's")
    if not dirs:
        pytest.skip("this kernel has no hugetlb pools")
    nr = dirs[0] / "nr_hugepages"
    code = ("import sys; caps = [l for l in open('/proc/self/status') if l.startswith('Cap')]; "
            "assert all(int(l.split()[1], 16) == 0 for l in caps), caps; "
            f"f = open({str(nr)!r}, 'r+'); n = f.read(); f.seek(0); f.write(n); f.close(); "
            "print('wrote', n.strip())")
    out = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs",
                          sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("wrote"), out.stderr


def _get(url: str, path: str) -> bytes:
    request = urllib.request.Request(f"{url}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return r.read()


@pytest.mark.timeout(120)
def test_the_daemons_make_no_system_call_their_units_filter_out(workdir, env):
    """strace -f over a confined source and destination through start, a migration, the HTTP
    endpoints and SIGTERM: every call is on the unit's SystemCallFilter= allow-list."""
    assert shutil.which("strace"), "strace is missing: install it (.ci/system-deps)"
    traces = {name: workdir / f"{name}.strace" for name in ("source", "dest")}
    source, source_url = _source(workdir, env, "source-traced", traces["source"])
    try:
        dest, dest_url, guest_socket = _dest(workdir, env, source_url, "hgm", traces["dest"])
        try:
            report = _guest(workdir, guest_socket)
            assert report["migration"]["phase"] == "complete", report["migration"].get("error")
            for url in (source_url, dest_url):
                assert _get(url, "/metrics") and _get(url, "/v1/status")
        finally:
            _stop_traced(dest)
    finally:
        _stop_traced(source)
    for name, unit in (("source", "migrator-source.service"), ("dest", "migrator-dest.service")):
        calls = traced(traces[name].read_text(), sys.executable)
        assert len(calls) > 20, traces[name].read_text()
        outside = calls - allowed_by((DEPLOY / "systemd" / unit).read_text())
        assert not outside, f"{name} calls what {unit} filters out: {sorted(outside)}"
