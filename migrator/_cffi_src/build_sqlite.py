"""cffi build script (API mode): compiles migrator.guest._sqlite from workload_sqlite.c, linked
against the system's libsqlite3 (Debian: libsqlite3-dev to build, libsqlite3-0 to run).

The SQLite workload's vCPU loop: real queries over a database that is the guest's memory
(sqlite3_deserialize, read-only, no copy), with the GIL released. Build time only; setup.py
names this file in cffi_modules and migrator/guest/sqlite.py imports the compiled module.

    python migrator/_cffi_src/build_sqlite.py   # compile in place, without pip
"""

from pathlib import Path

from cffi import FFI

_HERE = Path(__file__).parent

CDEF = """
struct sqlw_conn;
struct sqlw_query {
    uint64_t sched_ns, start_ns, end_ns, cpu_ns, answer;
    int64_t param;
    int32_t kind, rows;
};
struct sqlw_plan {
    uint64_t seed, interval_ns, t0_ns;
    uint32_t cum_weight[8];
    int64_t keys[8];
    uint64_t scramble[8];
    int64_t span;
    int32_t nkinds;
};
int sqlw_open(const uint8_t *buf, int64_t db_size, int64_t buf_size, int64_t mmap_bytes,
              int cache_pages, const char *const *sql, int nsql, int record,
              struct sqlw_conn **out, char *err, size_t errlen);
void sqlw_close(struct sqlw_conn *c);
int sqlw_scalars(struct sqlw_conn *c, int idx, int64_t *out, int n);
int64_t sqlw_run(struct sqlw_conn *c, const struct sqlw_plan *plan, struct sqlw_query *q,
                 uint64_t max, const volatile int *stop, uint32_t *trace, uint64_t trace_cap,
                 uint64_t *trace_len);
const char *sqlw_error(struct sqlw_conn *c);
const char *sqlite3_libversion(void);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "migrator.guest._sqlite",
    (_HERE / "workload_sqlite.c").read_text(),
    include_dirs=[str(_HERE)],
    libraries=["sqlite3"],
    extra_compile_args=["-O2"],
)

if __name__ == "__main__":
    root = _HERE.parents[1]
    built = ffibuilder.compile(tmpdir=str(root / "build" / "cffi"), verbose=True)
    target = root / "migrator" / "guest" / Path(built).name
    target.write_bytes(Path(built).read_bytes())
