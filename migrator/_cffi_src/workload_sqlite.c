/*
 * The SQLite workload's vCPU loop: real queries over a database whose bytes are the guest's
 * memory. Compiled into migrator.guest._sqlite by build_sqlite.py; migrator/guest/sqlite.py is
 * its Python face.
 *
 * The database is opened with sqlite3_deserialize(SQLITE_DESERIALIZE_READONLY) over the guest
 * mapping itself: memdb keeps a pointer to the buffer, it copies nothing. With mmap_size set,
 * the pager takes each page with xFetch, a pointer into that buffer, so every page a query
 * reads is read from guest memory (and faults there while it has not arrived). The page cache
 * is kept small besides.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include <sqlite3.h>

#include "monotonic.h"

#define SQLW_GUEST_PAGE 4096
#define SQLW_MAX_STMTS 8

struct sqlw_conn {
	sqlite3 *db;
	sqlite3_stmt *stmt[SQLW_MAX_STMTS];
	int nstmt;
};

/* One query as the vCPU ran it. Times are CLOCK_MONOTONIC ns; cpu_ns is the thread's CPU time
 * in the query, so (end - start) - cpu_ns is the time it was off the CPU (faults, preemption). */
struct sqlw_query {
	uint64_t sched_ns, start_ns, end_ns, cpu_ns, answer;
	int64_t param;
	int32_t kind, rows;
};

/* What a vCPU runs: kinds 0..nkinds-1 (statement i is kind i) chosen by cumulative weights,
 * each kind's parameter uniform in [1, keys[kind]] and mapped by scramble[kind] (0: none; else
 * multiplied mod 2^32, the bijection the database's `code` columns use). interval_ns 0: closed
 * loop (as fast as it goes); else open loop, query i scheduled at t0_ns + i * interval_ns. */
struct sqlw_plan {
	uint64_t seed, interval_ns, t0_ns;
	uint32_t cum_weight[SQLW_MAX_STMTS];
	int64_t keys[SQLW_MAX_STMTS];
	uint64_t scramble[SQLW_MAX_STMTS];
	int64_t span;
	int32_t nkinds;
};

/* ---- recording the pages the queries read (guest --record) ---- */

/* A per-thread buffer of the 4 KiB guest pages read, in order. Filled by the wrapped memdb
 * methods below while a recording vCPU runs queries. */
static __thread uint32_t *rec_pages;
static __thread uint64_t rec_cap, rec_len;
static const sqlite3_io_methods *memdb_methods;
static sqlite3_io_methods recording_methods;
static pthread_mutex_t recording_setup = PTHREAD_MUTEX_INITIALIZER;

static void rec_range(sqlite3_int64 off, int amt)
{
	if (!rec_pages || amt <= 0)
		return;
	for (uint64_t p = (uint64_t)off / SQLW_GUEST_PAGE;
	     p <= ((uint64_t)off + (uint64_t)amt - 1) / SQLW_GUEST_PAGE; p++)
		if (rec_len < rec_cap)
			rec_pages[rec_len++] = (uint32_t)p;
}

static int rec_read(sqlite3_file *f, void *buf, int amt, sqlite3_int64 off)
{
	rec_range(off, amt);
	return memdb_methods->xRead(f, buf, amt, off);
}

static int rec_fetch(sqlite3_file *f, sqlite3_int64 off, int amt, void **pp)
{
	int rc = memdb_methods->xFetch(f, off, amt, pp);
	if (rc == SQLITE_OK && *pp)
		rec_range(off, amt);
	return rc;
}

/* Swap the main file's methods for a copy whose xRead and xFetch note the pages they read.
 * Done after the schema is loaded; the file itself (memdb's) is untouched. */
static int install_recorder(sqlite3 *db)
{
	sqlite3_file *file = NULL;
	if (sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &file) != SQLITE_OK || !file)
		return -1;
	pthread_mutex_lock(&recording_setup);  /* every vCPU thread opens its own connection */
	if (!memdb_methods) {
		recording_methods = *file->pMethods;
		recording_methods.xRead = rec_read;
		recording_methods.xFetch = rec_fetch;
		memdb_methods = file->pMethods;
	}
	pthread_mutex_unlock(&recording_setup);
	file->pMethods = &recording_methods;
	return 0;
}

/* ---- opening ---- */

static void sqlw_close(struct sqlw_conn *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->nstmt; i++)
		sqlite3_finalize(c->stmt[i]);
	sqlite3_close(c->db);
	free(c);
}

static int fail(struct sqlw_conn *c, char *err, size_t errlen, const char *what)
{
	snprintf(err, errlen, "%s: %s", what, c && c->db ? sqlite3_errmsg(c->db) : "out of memory");
	sqlw_close(c);
	return -1;
}

/*
 * Open the database in buf (db_size bytes of it are the database; buf_size the whole mapping)
 * read-only, without a copy, and prepare the nsql statements. mmap_bytes > 0: the pager reads
 * pages by pointer into buf (up to that many bytes of it; SQLite caps it at its
 * SQLITE_MAX_MMAP_SIZE); cache_pages: the page cache's size. record: note every page read.
 */
static int sqlw_open(const uint8_t *buf, int64_t db_size, int64_t buf_size, int64_t mmap_bytes,
		     int cache_pages, const char *const *sql, int nsql, int record,
		     struct sqlw_conn **out, char *err, size_t errlen)
{
	struct sqlw_conn *c = calloc(1, sizeof(*c));
	char pragma[96];
	*out = NULL;
	if (!c || nsql > SQLW_MAX_STMTS)
		return fail(c, err, errlen, "sqlw_open");
	if (sqlite3_open_v2(":memory:", &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL))
		return fail(c, err, errlen, "sqlite3_open_v2");
	/* READONLY and no FREEONCLOSE: memdb reads buf in place and never writes or frees it. */
	if (sqlite3_deserialize(c->db, "main", (unsigned char *)buf, db_size, buf_size,
				SQLITE_DESERIALIZE_READONLY))
		return fail(c, err, errlen, "sqlite3_deserialize");
	snprintf(pragma, sizeof(pragma), "PRAGMA mmap_size=%lld; PRAGMA cache_size=%d;",
		 (long long)mmap_bytes, cache_pages);
	if (sqlite3_exec(c->db, pragma, NULL, NULL, NULL))
		return fail(c, err, errlen, "pragma");
	for (int i = 0; i < nsql; i++) {
		if (sqlite3_prepare_v3(c->db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &c->stmt[i], NULL))
			return fail(c, err, errlen, sql[i]);
		c->nstmt++;
	}
	if (record && install_recorder(c->db))
		return fail(c, err, errlen, "SQLITE_FCNTL_FILE_POINTER");
	*out = c;
	return 0;
}

/* ---- running queries ---- */

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Sleep to just before ns, then spin to it: a wake-up alone is late by tens of µs, which
 * would be counted in every query's latency. */
#define SQLW_SPIN_NS 30000ull
static void sleep_until(uint64_t ns)
{
	if (ns > SQLW_SPIN_NS) {
		uint64_t wake = ns - SQLW_SPIN_NS;
		struct timespec ts = {.tv_sec = (time_t)(wake / 1000000000ull),
				      .tv_nsec = (long)(wake % 1000000000ull)};
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
			;
	}
	while (monotonic_ns() < ns)
		;
}

/* The answer's checksum: every column of every row as a 64-bit integer, FNV-1a style
 * (migrator/workload/queries.py computes the same in Python to check answers). */
static uint64_t mix_in(uint64_t h, int64_t v)
{
	return (h ^ (uint64_t)v) * 0x100000001b3ull;
}

/* Run statement idx with ?1 = param (and ?2 = span where it has one); -1 on error. */
static int run_stmt(struct sqlw_conn *c, int idx, int64_t param, int64_t span, uint64_t *answer)
{
	sqlite3_stmt *s = c->stmt[idx];
	uint64_t h = 0xcbf29ce484222325ull;
	int rows = 0, rc;
	int params = sqlite3_bind_parameter_count(s);
	if (params >= 1)
		sqlite3_bind_int64(s, 1, param);
	if (params >= 2)
		sqlite3_bind_int64(s, 2, span);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		int cols = sqlite3_column_count(s);
		for (int i = 0; i < cols; i++)
			h = mix_in(h, sqlite3_column_int64(s, i));
		rows++;
	}
	sqlite3_reset(s);
	*answer = h;
	return rc == SQLITE_DONE ? rows : -1;
}

/* The first row of statement idx (no parameters) into out[0..n-1], for the database's facts. */
static int sqlw_scalars(struct sqlw_conn *c, int idx, int64_t *out, int n)
{
	sqlite3_stmt *s = c->stmt[idx];
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		for (int i = 0; i < n; i++)
			out[i] = sqlite3_column_int64(s, i);
	sqlite3_reset(s);
	return rc == SQLITE_ROW ? 0 : -1;
}

static uint64_t next_random(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

/*
 * A vCPU: run queries per plan into q[0..max-1] until *stop is set or max are done; returns
 * how many ran, or -(1 + index) of a query that failed. trace (may be NULL): record the guest
 * pages read into it, up to trace_cap; *trace_len says how many were read in all (capped).
 */
static int64_t sqlw_run(struct sqlw_conn *c, const struct sqlw_plan *plan, struct sqlw_query *q,
			uint64_t max, const volatile int *stop, uint32_t *trace, uint64_t trace_cap,
			uint64_t *trace_len)
{
	uint64_t x = plan->seed | 1;
	uint64_t total = plan->cum_weight[plan->nkinds - 1];
	uint64_t i;
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);  /* this thread's sleeps end when asked */
	rec_pages = trace;
	rec_cap = trace ? trace_cap : 0;
	rec_len = 0;
	for (i = 0; i < max && !*stop; i++) {
		uint64_t pick = next_random(&x) % total;
		int kind = 0;
		while ((uint64_t)plan->cum_weight[kind] <= pick)
			kind++;
		int64_t param = 1 + (int64_t)(next_random(&x) % (uint64_t)plan->keys[kind]);
		if (plan->scramble[kind])
			param = (int64_t)(((uint64_t)param * plan->scramble[kind]) & 0xffffffffull);
		q[i].kind = kind;
		q[i].param = param;
		if (plan->interval_ns) {
			/* open loop: a late query starts at once, and its latency counts from when it
			 * was due, so a slow query delays the ones behind it visibly */
			q[i].sched_ns = plan->t0_ns + i * plan->interval_ns;
			if (monotonic_ns() < q[i].sched_ns)
				sleep_until(q[i].sched_ns);
		}
		uint64_t cpu0 = thread_cpu_ns();
		q[i].start_ns = monotonic_ns();
		if (!plan->interval_ns)
			q[i].sched_ns = q[i].start_ns;
		q[i].rows = run_stmt(c, kind, param, plan->span, &q[i].answer);
		q[i].end_ns = monotonic_ns();
		q[i].cpu_ns = thread_cpu_ns() - cpu0;
		if (q[i].rows < 0) {
			rec_pages = NULL;
			return -(int64_t)(i + 1);
		}
	}
	if (trace_len)
		*trace_len = rec_len;
	rec_pages = NULL;
	return (int64_t)i;
}

static const char *sqlw_error(struct sqlw_conn *c)
{
	return sqlite3_errmsg(c->db);
}
