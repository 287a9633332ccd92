/*
 * The synthetic vCPU's inner loop, and the SIGBUS trampoline a VMM needs to survive poisoned
 * memory. Compiled into migrator.guest._native by build_guest.py; migrator/guest/touch.py is
 * its Python face.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

#include "monotonic.h"

/* A vCPU's touch of poisoned memory: which access, where, and how much the kernel took away. */
struct sigbus_hit {
	uint64_t index;    /* the access that faulted */
	uint64_t address;  /* si_addr */
	int32_t lsb;       /* si_addr_lsb: log2 of the poisoned extent (12: 4 KiB, 21: 2 MiB, 30: 1 GiB) */
	int32_t code;      /* si_code: BUS_MCEERR_AR for memory errors */
};

static __thread sigjmp_buf touch_env;
static __thread volatile int touch_armed;
static __thread volatile uint64_t touch_bus_addr;
static __thread volatile int32_t touch_bus_lsb, touch_bus_code;
static struct sigaction previous_sigbus;

/*
 * Like a VMM that turns a host SIGBUS into a machine check for the guest: note the fault and
 * jump back into the touch loop. A SIGBUS anywhere else gets the previous disposition back
 * and the faulting access, re-executed, raises it again.
 */
static void on_sigbus(int sig, siginfo_t *info, void *context)
{
	(void)sig; (void)context;
	if (touch_armed) {
		touch_armed = 0;
		touch_bus_addr = (uint64_t)(uintptr_t)info->si_addr;
		touch_bus_code = info->si_code;
		touch_bus_lsb = (info->si_code == BUS_MCEERR_AR || info->si_code == BUS_MCEERR_AO)
				? info->si_addr_lsb : 0;
		siglongjmp(touch_env, 1);
	}
	sigaction(SIGBUS, &previous_sigbus, NULL);
}

/* SA_NODEFER: siglongjmp(.., 0) does not restore the mask, so SIGBUS must not be blocked. */
static int catch_sigbus(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	return sigaction(SIGBUS, &sa, &previous_sigbus) < 0 ? -errno : 0;
}

/*
 * A synthetic vCPU: touch each address in turn (store values[i] where writes[i], else load),
 * recording when each access started (start_ns, CLOCK_MONOTONIC: comparable across processes
 * on one host, so a destination can line its own timestamps up with it; may be NULL) and how
 * long it took (latency_ns). Returns a checksum of the loaded words so the loads cannot be
 * optimised away. Addresses must be 8-byte aligned. With hits (catch_sigbus() done), an access
 * that gets SIGBUS is recorded in hits (up to max_hits, *nhits counts all) and the loop moves on.
 */
static uint64_t touch_loop(const uint64_t *addrs, const uint8_t *writes, const uint64_t *values,
			   size_t n, uint64_t *latency_ns, uint64_t *start_ns,
			   struct sigbus_hit *hits, size_t max_hits, size_t *nhits)
{
	volatile uint64_t sum = 0;
	volatile size_t i;
	volatile uint64_t t0;
	size_t found = 0;
	for (i = 0; i < n; i++) {
		volatile uint64_t *p = (volatile uint64_t *)(uintptr_t)addrs[i];
		t0 = monotonic_ns();
		if (start_ns)
			start_ns[i] = t0;
		if (hits) {
			if (sigsetjmp(touch_env, 0)) {
				latency_ns[i] = monotonic_ns() - t0;
				if (found < max_hits) {
					hits[found].index = i;
					hits[found].address = touch_bus_addr;
					hits[found].lsb = touch_bus_lsb;
					hits[found].code = touch_bus_code;
				}
				found++;
				continue;
			}
			touch_armed = 1;
		}
		if (writes && writes[i])
			*p = values ? values[i] : (uint64_t)i;
		else
			sum += *p;
		touch_armed = 0;
		latency_ns[i] = monotonic_ns() - t0;
	}
	if (nhits)
		*nhits = found;
	return sum;
}
