"""cffi build script (API mode): compiles migrator.guest._native from guest_touch.c.

The synthetic vCPU's touch loop and its SIGBUS trampoline: guest work, not kernel interface,
so they live here and not in cffi_uffd. Build time only; setup.py names this file in
cffi_modules and migrator/guest/touch.py imports the compiled module.

    python migrator/_cffi_src/build_guest.py   # compile in place, without pip
"""

from pathlib import Path

from cffi import FFI

_HERE = Path(__file__).parent

CDEF = """
#define BUS_MCEERR_AR ...

struct sigbus_hit { uint64_t index; uint64_t address; int32_t lsb; int32_t code; };
int catch_sigbus(void);
uint64_t touch_loop(const uint64_t *addrs, const uint8_t *writes, const uint64_t *values,
                    size_t n, uint64_t *latency_ns, uint64_t *start_ns,
                    struct sigbus_hit *hits, size_t max_hits, size_t *nhits);
uint64_t random_reads(const uint8_t *base, uint64_t size, uint64_t n, uint64_t seed);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "migrator.guest._native",
    (_HERE / "guest_touch.c").read_text() + (_HERE / "guest_rate.c").read_text(),
    include_dirs=[str(_HERE)],
    extra_compile_args=["-O2"],
)

if __name__ == "__main__":
    # The generated _native.c and objects go to build/; the module lands in migrator/guest/.
    root = _HERE.parents[1]
    built = ffibuilder.compile(tmpdir=str(root / "build" / "cffi"), verbose=True)
    target = root / "migrator" / "guest" / Path(built).name
    target.write_bytes(Path(built).read_bytes())
