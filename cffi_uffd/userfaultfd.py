"""A userfaultfd: open, handshake, register ranges, resolve faults, read events."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from functools import cache

from . import events
from ._native import ffi, lib
from .errors import FeatureUnsupported, UffdError, raise_for
from .flags import Feature, Ioctl, RegisterMode

DEV_PATH = "/dev/userfaultfd"
_OPEN_FLAGS = lib.O_NONBLOCK | lib.O_CLOEXEC
_MAX_BATCH = 64


@dataclass(frozen=True)
class ApiResult:
    # Everything the kernel offers: UFFDIO_API reports all of it whatever was requested, so
    # only the requested features are enabled on the descriptor.
    features: Feature
    ioctls: Ioctl


def _open_fd(via: str, user_mode_only: bool) -> tuple[int, str]:
    flags = _OPEN_FLAGS | (lib.UFFD_USER_MODE_ONLY if user_mode_only else 0)
    if via in ("auto", "syscall"):
        fd = lib.uffd_open_syscall(flags)
        if fd >= 0:
            return fd, "syscall"
        # EPERM here usually means vm.unprivileged_userfaultfd=0 for a non-root caller:
        # /dev/userfaultfd is the sanctioned way around it.
        if via == "syscall" or -fd not in (errno.EPERM, errno.ENOSYS):
            raise_for("open", -fd, "userfaultfd(2)")
    fd = lib.uffd_open_dev(DEV_PATH.encode(), flags)
    if fd < 0:
        raise_for("open", -fd, DEV_PATH)
    return fd, "dev"


@cache
def supported_features() -> ApiResult:
    """What the running kernel offers: a UFFDIO_API with features=0 on a throwaway descriptor."""
    with Userfaultfd() as probe:
        return probe.api(Feature(0))


class Userfaultfd:
    """One userfaultfd descriptor (non-blocking, close-on-exec).

    `opened_via` says how it was opened: "syscall" or "dev" (/dev/userfaultfd).
    The resolving ioctls act on the address space of the process that created it, so a
    descriptor received over a UNIX socket resolves faults of the sender.
    """

    def __init__(self, via: str = "auto", *, user_mode_only: bool = False, fd: int | None = None):
        if fd is not None:
            self.fd, self.opened_via = fd, "inherited"
        else:
            self.fd, self.opened_via = _open_fd(via, user_mode_only)
        self._events = ffi.new("struct uffd_event[]", _MAX_BATCH)

    # -- lifecycle -------------------------------------------------------------------------
    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Userfaultfd:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ioctl(self, operation: str, request: int, arg, detail: str = "") -> None:
        rc = lib.uffd_ioctl(self.fd, request, arg)
        if rc < 0:
            raise_for(operation, -rc, detail)

    # -- handshake -------------------------------------------------------------------------
    def api(self, features: Feature | int = 0, *, precheck: bool = True) -> ApiResult:
        """UFFDIO_API. With precheck, features the kernel lacks are refused by name first."""
        features = int(features)
        if precheck and features:
            missing = features & ~int(supported_features().features)
            if missing:
                names = [f.name.lower() for f in Feature if f & missing]
                unknown = missing & ~sum(int(f) for f in Feature)
                names += [f"bit {b}" for b in range(64) if unknown >> b & 1]
                raise FeatureUnsupported(
                    f"the running kernel does not offer userfaultfd feature(s) {', '.join(names)}; "
                    "supported_features() says what it offers"
                )
        arg = ffi.new("struct uffdio_api *", {"api": lib.UFFD_API, "features": features})
        self._ioctl("api", lib.UFFDIO_API, arg, f"features=0x{features:x}")
        return ApiResult(Feature(arg.features), Ioctl(arg.ioctls))

    # -- ranges ----------------------------------------------------------------------------
    def register(self, start: int, length: int, mode: RegisterMode) -> Ioctl:
        """UFFDIO_REGISTER; returns the ioctls allowed on the range."""
        arg = ffi.new("struct uffdio_register *", {"range": (start, length), "mode": int(mode)})
        self._ioctl("register", lib.UFFDIO_REGISTER, arg, f"{mode!r} at 0x{start:x}+0x{length:x}")
        return Ioctl(arg.ioctls)

    # -- resolving -------------------------------------------------------------------------
    def _resolve(self, operation: str, request: int, arg, done_field: str, length: int,
                 start: int) -> int:
        rc = lib.uffd_ioctl(self.fd, request, arg)
        done = getattr(arg, done_field)
        if rc < 0:
            try:
                raise_for(operation, -rc, f"0x{start:x}+0x{length:x}")
            except UffdError as e:
                e.done = max(done, 0)  # bytes resolved before the error
                raise
        return done

    def copy(self, dst: int, src: int, length: int, *, dontwake: bool = False,
             wp: bool = False) -> int:
        """UFFDIO_COPY (MISSING faults): copy length bytes from src into the registered dst."""
        mode = (lib.UFFDIO_COPY_MODE_DONTWAKE if dontwake else 0) | (lib.UFFDIO_COPY_MODE_WP if wp else 0)
        arg = ffi.new("struct uffdio_copy *", {"dst": dst, "src": src, "len": length, "mode": mode})
        return self._resolve("copy", lib.UFFDIO_COPY, arg, "copy", length, dst)

    def zeropage(self, start: int, length: int, *, dontwake: bool = False) -> int:
        mode = lib.UFFDIO_ZEROPAGE_MODE_DONTWAKE if dontwake else 0
        arg = ffi.new("struct uffdio_zeropage *", {"range": (start, length), "mode": mode})
        return self._resolve("zeropage", lib.UFFDIO_ZEROPAGE, arg, "zeropage", length, start)

    def continue_(self, start: int, length: int, *, dontwake: bool = False,
                  wp: bool = False) -> int:
        """UFFDIO_CONTINUE (MINOR faults): map the page-cache pages already in the range."""
        mode = (lib.UFFDIO_CONTINUE_MODE_DONTWAKE if dontwake else 0) | (
            lib.UFFDIO_CONTINUE_MODE_WP if wp else 0)
        arg = ffi.new("struct uffdio_continue *", {"range": (start, length), "mode": mode})
        return self._resolve("continue", lib.UFFDIO_CONTINUE, arg, "mapped", length, start)

    def poison(self, start: int, length: int, *, dontwake: bool = False) -> int:
        """UFFDIO_POISON (Linux 6.6+): later touches of the range get SIGBUS."""
        mode = lib.UFFDIO_POISON_MODE_DONTWAKE if dontwake else 0
        arg = ffi.new("struct uffdio_poison *", {"range": (start, length), "mode": mode})
        return self._resolve("poison", lib.UFFDIO_POISON, arg, "updated", length, start)

    def move(self, dst: int, src: int, length: int, *, dontwake: bool = False,
             allow_src_holes: bool = False) -> int:
        """UFFDIO_MOVE (Linux 6.8+, anonymous memory): move pages from src to dst."""
        mode = (lib.UFFDIO_MOVE_MODE_DONTWAKE if dontwake else 0) | (
            lib.UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES if allow_src_holes else 0)
        arg = ffi.new("struct uffdio_move *", {"dst": dst, "src": src, "len": length, "mode": mode})
        return self._resolve("move", lib.UFFDIO_MOVE, arg, "move", length, dst)

    def writeprotect(self, start: int, length: int, protect: bool, *,
                     dontwake: bool = False) -> None:
        mode = (lib.UFFDIO_WRITEPROTECT_MODE_WP if protect else 0) | (
            lib.UFFDIO_WRITEPROTECT_MODE_DONTWAKE if dontwake else 0)
        arg = ffi.new("struct uffdio_writeprotect *", {"range": (start, length), "mode": mode})
        self._ioctl("writeprotect", lib.UFFDIO_WRITEPROTECT, arg, f"0x{start:x}+0x{length:x}")

    # -- events ----------------------------------------------------------------------------
    def read_events(self, timeout: float | None = 0.0, max_events: int = _MAX_BATCH) -> list[events.Event]:
        """Read up to max_events pending events, waiting up to timeout seconds (None: forever).

        Returns [] on timeout. Reading in batches matters: REMOVE and page-fault events can
        arrive out of causal order, and while a REMOVE is pending every ioctl fails with EAGAIN.
        """
        timeout_ms = -1 if timeout is None else int(timeout * 1000)
        n = lib.uffd_read_events(self.fd, self._events, min(max_events, _MAX_BATCH), timeout_ms)
        if n < 0:
            raise_for("read", -n)
        return [events.from_native(self._events[i]) for i in range(n)]
