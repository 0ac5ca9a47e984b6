/*
 * nc-workload: the memory workload of the NovaCron test guest.
 *
 * It keeps a working set of pages, dirties them at a paced rate, and checks
 * that memory still holds what it wrote. Migration tests read its console
 * output: heartbeat gaps measure how long the guest was stopped, and a
 * fingerprint mismatch means a page arrived stale or damaged.
 *
 * Parameters come from the kernel command line (/proc/cmdline); tokens given
 * as arguments are applied after it, so the program can also run on a host:
 *   nc-workload nc.dirty_mib=4 nc.rate_mib=2 nc.run_s=3
 *
 * Console protocol, one line per write(2) so lines never interleave.
 * Parsers depend on these formats; changing them breaks compatibility:
 *   NCREADY dirty_mib=<n> rate_mib=<n> pattern=compressible|random
 *   NCHB seq=<n> t_ms=<n> dirtied_mib=<n> mem=ok|BAD verified=<n>
 *   NCMEMBAD page=<n>
 *   NCSELFTEST corrupted page=<n>
 *   NCWARN <text>
 *   NCERROR <text>
 *
 * Integrity check: every page has an expected fingerprint, the XOR over its
 * 512 words of mix(global word index, word). mix is a bijection in the word,
 * so any single changed word always changes the fingerprint, and a sparse
 * write updates it in O(1) without rehashing the page. Mixing in the index
 * also catches a page landing at the wrong address.
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE_BYTES 4096u
#define PAGE_WORDS (PAGE_BYTES / sizeof(uint64_t))
#define PAGES_PER_MIB (1048576u / PAGE_BYTES)
#define SPARSE_WORDS 4u /* words a compressible write changes */
#define SLICE_NS 10000000ull /* pacing slice: 10 ms */
#define SWEEP_PERIOD_NS 1000000000ull /* full verification pass */
#define BACKLOG_NS 50000000ull /* work owed after a stall is capped */
#define HB_SAMPLE_PAGES 16u
#define SELFTEST_AFTER_NS 1500000000ull
#define NS_PER_S 1000000000ull

enum pattern { PATTERN_COMPRESSIBLE, PATTERN_RANDOM };

struct config {
	uint64_t dirty_mib;
	uint64_t rate_mib; /* MiB/s, 0 = idle */
	enum pattern pattern;
	uint64_t hb_ms;
	uint64_t run_s; /* 0 = forever; for host tests */
	bool selftest_corrupt;
};

struct workload {
	uint64_t *mem; /* npages * PAGE_WORDS words */
	uint64_t *fp; /* expected fingerprint of each page */
	size_t npages;
	uint64_t rng;
	uint64_t pages_dirtied; /* by the paced writer, not the first touch */
	uint64_t pages_verified;
	size_t sweep_next;
	bool bad;
};

/* Writes one line with a single write(2). Lines are short; a line that does
 * not fit the buffer is cut, never split across writes. */
__attribute__((format(printf, 1, 2))) static void emit(const char *fmt, ...)
{
	char line[256];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	while (write(STDOUT_FILENO, line, (size_t)n) < 0 && errno == EINTR)
		;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static void sleep_until_ns(uint64_t t_ns)
{
	struct timespec ts = { .tv_sec = (time_t)(t_ns / NS_PER_S),
			       .tv_nsec = (long)(t_ns % NS_PER_S) };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

/* xorshift64*: fast, and random enough to defeat compression. */
static uint64_t next_rand(struct workload *wl)
{
	wl->rng ^= wl->rng >> 12;
	wl->rng ^= wl->rng << 25;
	wl->rng ^= wl->rng >> 27;
	return wl->rng * 0x2545F4914F6CDD1Dull;
}

/* A bijection in w for every fixed index: xor, xorshift and odd multiply are
 * each invertible. */
static uint64_t mix(uint64_t index, uint64_t w)
{
	uint64_t x = w ^ (index * 0x9E3779B97F4A7C15ull);

	x ^= x >> 31;
	x *= 0xBF58476D1CE4E5B9ull;
	x ^= x >> 29;
	return x;
}

static uint64_t page_fingerprint(const struct workload *wl, size_t page)
{
	const uint64_t *w = wl->mem + page * PAGE_WORDS;
	uint64_t base = (uint64_t)page * PAGE_WORDS;
	uint64_t h = 0;

	for (size_t i = 0; i < PAGE_WORDS; i++)
		h ^= mix(base + i, w[i]);
	return h;
}

static void verify_page(struct workload *wl, size_t page)
{
	uint64_t actual = page_fingerprint(wl, page);

	wl->pages_verified++;
	if (actual == wl->fp[page])
		return;
	emit("NCMEMBAD page=%zu\n", page);
	wl->bad = true;
	/* Adopt what is there, so one bad page is reported once. */
	wl->fp[page] = actual;
}

/* Compressible: a few words spread over an otherwise unchanged page, so the
 * page stays mostly zero. Random: every byte of the page is new. */
static void dirty_page(struct workload *wl, size_t page, enum pattern pattern)
{
	uint64_t *w = wl->mem + page * PAGE_WORDS;
	uint64_t base = (uint64_t)page * PAGE_WORDS;

	if (pattern == PATTERN_RANDOM) {
		uint64_t h = 0;

		for (size_t i = 0; i < PAGE_WORDS; i++) {
			w[i] = next_rand(wl);
			h ^= mix(base + i, w[i]);
		}
		wl->fp[page] = h;
		return;
	}
	for (size_t k = 0; k < SPARSE_WORDS; k++) {
		size_t i = k * (PAGE_WORDS / SPARSE_WORDS);
		uint64_t v = next_rand(wl);

		/* Reads the old word from memory: if it was corrupted, the
		 * fingerprint keeps disagreeing with the page. */
		wl->fp[page] ^= mix(base + i, w[i]) ^ mix(base + i, v);
		w[i] = v;
	}
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

/* Applies one "key=value" token; tokens not starting with "nc." belong to the
 * kernel and are skipped. Returns 0 or -EINVAL after printing NCERROR. */
static int apply_token(struct config *cfg, const char *tok)
{
	static const struct {
		const char *key;
		uint64_t min, max;
		size_t offset;
	} nums[] = {
		{ "nc.dirty_mib", 1, 1u << 20, offsetof(struct config, dirty_mib) },
		{ "nc.rate_mib", 0, 1u << 20, offsetof(struct config, rate_mib) },
		{ "nc.hb_ms", 10, 3600000, offsetof(struct config, hb_ms) },
		{ "nc.run_s", 0, 1u << 30, offsetof(struct config, run_s) },
	};
	const char *eq = strchr(tok, '=');

	if (strncmp(tok, "nc.", 3) != 0)
		return 0;
	if (!eq) {
		emit("NCWARN %.64s has no value, ignored\n", tok);
		return 0;
	}
	size_t key_len = (size_t)(eq - tok);
	const char *val = eq + 1;

	for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
		if (strlen(nums[i].key) != key_len || strncmp(tok, nums[i].key, key_len))
			continue;
		uint64_t *field = (uint64_t *)((char *)cfg + nums[i].offset);
		if (parse_u64(val, nums[i].min, nums[i].max, field) == 0)
			return 0;
		emit("NCERROR %s=\"%.32s\" is not a whole number in [%" PRIu64 ", %" PRIu64 "]\n",
		     nums[i].key, val, nums[i].min, nums[i].max);
		return -EINVAL;
	}
	if (key_len == 10 && strncmp(tok, "nc.pattern", key_len) == 0) {
		if (strcmp(val, "compressible") == 0) {
			cfg->pattern = PATTERN_COMPRESSIBLE;
			return 0;
		}
		if (strcmp(val, "random") == 0) {
			cfg->pattern = PATTERN_RANDOM;
			return 0;
		}
		emit("NCERROR nc.pattern=\"%.32s\" is unknown (use compressible or random)\n", val);
		return -EINVAL;
	}
	if (key_len == 19 && strncmp(tok, "nc.selftest_corrupt", key_len) == 0) {
		uint64_t v;
		if (parse_u64(val, 0, 1, &v) == 0) {
			cfg->selftest_corrupt = v;
			return 0;
		}
		emit("NCERROR nc.selftest_corrupt=\"%.32s\" must be 0 or 1\n", val);
		return -EINVAL;
	}
	/* nc.workload is read by /init, not here. */
	if (key_len != 11 || strncmp(tok, "nc.workload", key_len) != 0)
		emit("NCWARN unknown parameter %.*s ignored\n", (int)key_len, tok);
	return 0;
}

/* Splits text at whitespace and applies each token. The kernel command line
 * is at most a few KiB; tokens are cut at 255 bytes. */
static int apply_text(struct config *cfg, const char *text)
{
	char tok[256];

	while (*text) {
		size_t n = strcspn(text, " \t\n");
		if (n > 0) {
			size_t len = n < sizeof(tok) ? n : sizeof(tok) - 1;
			memcpy(tok, text, len);
			tok[len] = '\0';
			int rc = apply_token(cfg, tok);
			if (rc < 0)
				return rc;
		}
		text += n;
		text += strspn(text, " \t\n");
	}
	return 0;
}

static int load_config(struct config *cfg, int argc, char **argv)
{
	char buf[4096];
	FILE *f = fopen("/proc/cmdline", "r");

	*cfg = (struct config){ .dirty_mib = 16, .hb_ms = 100 };
	if (f) {
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = '\0';
		int rc = apply_text(cfg, buf);
		if (rc < 0)
			return rc;
	}
	for (int i = 1; i < argc; i++) {
		int rc = apply_token(cfg, argv[i]);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Work owed under a per-second budget. Credit accrues with real time and is
 * capped, so after a stall (a migration's downtime) the work resumes at its
 * normal pace instead of catching up in a burst. */
static uint64_t units_owed(uint64_t *credit, uint64_t units_per_s, uint64_t dt_ns)
{
	uint64_t cap = units_per_s * BACKLOG_NS;

	if (dt_ns > BACKLOG_NS)
		dt_ns = BACKLOG_NS;
	*credit += units_per_s * dt_ns;
	if (*credit > cap)
		*credit = cap;
	return *credit / NS_PER_S;
}

/* Checked every few pages: work stops when the next heartbeat is due, so a
 * guest short of CPU falls behind its rates but never delays a heartbeat
 * (heartbeat gaps are how tests measure downtime). */
static bool out_of_time(uint64_t done, uint64_t deadline_ns)
{
	return done % 16 == 15 && now_ns() >= deadline_ns;
}

static int run(const struct config *cfg)
{
	struct workload wl = { .npages = (size_t)(cfg->dirty_mib * PAGES_PER_MIB) };
	size_t bytes = wl.npages * PAGE_BYTES;
	uint64_t rate_pages = cfg->rate_mib * PAGES_PER_MIB;
	uint64_t hb_ns = cfg->hb_ms * 1000000ull;
	uint64_t dirty_credit = 0, sweep_credit = 0, seq = 0;
	bool corrupted = !cfg->selftest_corrupt;

	wl.mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	wl.fp = calloc(wl.npages, sizeof(*wl.fp));
	if (wl.mem == MAP_FAILED || !wl.fp) {
		emit("NCERROR cannot allocate a %" PRIu64 " MiB working set"
		     " (give the VM more memory or lower nc.dirty_mib)\n", cfg->dirty_mib);
		return 2;
	}
	wl.rng = now_ns() | 1;
	/* Touch every page so none is a zero page, and record its fingerprint.
	 * A fresh mapping reads as zeros, which dirty_page() relies on. */
	for (size_t p = 0; p < wl.npages; p++) {
		wl.fp[p] = page_fingerprint(&wl, p);
		dirty_page(&wl, p, cfg->pattern);
	}
	emit("NCREADY dirty_mib=%" PRIu64 " rate_mib=%" PRIu64 " pattern=%s\n", cfg->dirty_mib,
	     cfg->rate_mib, cfg->pattern == PATTERN_RANDOM ? "random" : "compressible");

	uint64_t start = now_ns(), last = start, next_hb = start;
	for (;;) {
		uint64_t now = now_ns(), dt = now - last, n, done;
		last = now;

		if (now >= next_hb) {
			for (unsigned i = 0; i < HB_SAMPLE_PAGES; i++)
				verify_page(&wl, (size_t)(next_rand(&wl) % wl.npages));
			emit("NCHB seq=%" PRIu64 " t_ms=%" PRIu64 " dirtied_mib=%" PRIu64
			     " mem=%s verified=%" PRIu64 "\n",
			     seq++, now / 1000000, wl.pages_dirtied / PAGES_PER_MIB,
			     wl.bad ? "BAD" : "ok", wl.pages_verified);
			next_hb += hb_ns;
			if (next_hb <= now)
				next_hb = now + hb_ns;
		}
		if (!corrupted && now - start >= SELFTEST_AFTER_NS) {
			/* The page the sweep checks next, so a paced rewrite
			 * cannot erase the damage before it is seen. */
			((volatile unsigned char *)wl.mem)[wl.sweep_next * PAGE_BYTES + 123] ^= 0x5a;
			emit("NCSELFTEST corrupted page=%zu\n", wl.sweep_next);
			corrupted = true;
		}
		n = units_owed(&sweep_credit, wl.npages, dt);
		for (done = 0; done < n && !out_of_time(done, next_hb); done++) {
			verify_page(&wl, wl.sweep_next);
			wl.sweep_next = (wl.sweep_next + 1) % wl.npages;
		}
		sweep_credit -= done * NS_PER_S;
		n = units_owed(&dirty_credit, rate_pages, dt);
		for (done = 0; done < n && !out_of_time(done, next_hb); done++)
			dirty_page(&wl, (size_t)(next_rand(&wl) % wl.npages), cfg->pattern);
		dirty_credit -= done * NS_PER_S;
		wl.pages_dirtied += done;

		if (cfg->run_s && now - start >= cfg->run_s * NS_PER_S)
			break;
		uint64_t wake = now_ns() + SLICE_NS;
		sleep_until_ns(wake < next_hb ? wake : next_hb);
	}
	munmap(wl.mem, bytes);
	free(wl.fp);
	return wl.bad ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct config cfg;

	if (load_config(&cfg, argc, argv) < 0)
		return 2;
	return run(&cfg);
}
