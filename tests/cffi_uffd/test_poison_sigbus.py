"""UFFDIO_POISON: a later touch of the poisoned page dies with SIGBUS (in a child process)."""

import faulthandler
import os
import signal
import traceback
from array import array

from cffi_uffd import PAGE_SIZE, Feature, Mapping, RegisterMode, Userfaultfd
from migrator.guest.touch import touch

_CHILD_SURVIVED = 3


def _child() -> None:
    faulthandler.disable()  # let SIGBUS kill the child plainly, without a traceback dump
    uffd = Userfaultfd()
    uffd.api(Feature.POISON)
    m = Mapping.anonymous(2 * PAGE_SIZE)
    uffd.register(m.address, m.length, RegisterMode.MISSING)
    uffd.poison(m.address + PAGE_SIZE, PAGE_SIZE)
    touch(array("Q", [m.address + PAGE_SIZE]))


def test_touching_a_poisoned_page_raises_sigbus():
    pid = os.fork()
    if pid == 0:
        try:
            _child()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(_CHILD_SURVIVED)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status), f"child exited with {os.WEXITSTATUS(status)}, no signal"
    assert os.WTERMSIG(status) == signal.SIGBUS
