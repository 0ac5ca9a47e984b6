/* The event bus (src/vm/events.h): order, timeouts, ring overflow and the
 * `missed` count, close waking every waiter. */
#include "nc_test.h"

#include <jansson.h>
#include <pthread.h>

#include "vm/events.h"

static int setup(void **state) {
  struct nc_events *ev;
  if (nc_events_new(&ev) != 0)
    return -1;
  *state = ev;
  return 0;
}

static int teardown(void **state) {
  nc_events_free(*state);
  return 0;
}

static void publish_n(struct nc_events *ev, int from, int to) {
  for (int i = from; i <= to; i++)
    nc_events_publish(ev, "vm.state", json_pack("{s:i}", "n", i));
}

/* Waits for the event after `after`; checks its number and payload. */
static void expect_next(struct nc_events *ev, uint64_t after, uint64_t want_seq, int want_n,
                        uint64_t want_missed) {
  char *type = NULL, *text = NULL;
  uint64_t seq = 0, missed = 99;
  int rc = nc_events_wait(ev, after, 1000, &type, &text, &seq, &missed);
  if (rc != 0)
    fail_msg("nc_events_wait(after %llu) returned %d (%s)", (unsigned long long)after, rc,
             nc_strerror(rc));
  EXPECT_U64(seq, want_seq);
  EXPECT_U64(missed, want_missed);
  EXPECT_STR(type, "vm.state");
  json_t *j = json_loads(text, 0, NULL);
  if (!j)
    fail_msg("event text is not JSON: %s", text);
  EXPECT_I64(json_integer_value(json_object_get(j, "n")), want_n);
  json_decref(j);
  free(type);
  free(text);
}

static void test_order(void **state) {
  struct nc_events *ev = *state;
  EXPECT_U64(nc_events_last(ev), 0);
  publish_n(ev, 1, 5);
  EXPECT_U64(nc_events_last(ev), 5);
  for (uint64_t after = 0; after < 5; after++)
    expect_next(ev, after, after + 1, (int)after + 1, 0);
}

/* The event text is the published data as docs/api.md shows it
 * (`data: {"vm","from","to","reason","at"}`), the type travels apart. */
static void test_text_is_the_data(void **state) {
  struct nc_events *ev = *state;
  nc_events_publish(ev, "vm.state",
                    json_pack("{s:s, s:s, s:s}", "vm", "web-1", "from", "stopped", "to",
                              "starting"));
  char *type, *text;
  uint64_t seq, missed;
  EXPECT_RC(nc_events_wait(ev, 0, 0, &type, &text, &seq, &missed), 0);
  EXPECT_STR(type, "vm.state");
  json_t *got = json_loads(text, 0, NULL);
  json_t *want = json_pack("{s:s, s:s, s:s}", "vm", "web-1", "from", "stopped", "to", "starting");
  if (!json_equal(got, want))
    fail_msg("event text %s differs from the published data", text);
  EXPECT_TRUE(strchr(text, '\n') == NULL); /* one SSE data: line */
  json_decref(got);
  json_decref(want);
  free(type);
  free(text);
}

static void test_timeout(void **state) {
  struct nc_events *ev = *state;
  char *type = NULL, *text = NULL;
  uint64_t seq, missed;
  int64_t t0 = nct_now_ms();
  EXPECT_RC(nc_events_wait(ev, 0, 120, &type, &text, &seq, &missed), -ETIMEDOUT);
  int64_t took = nct_now_ms() - t0;
  if (took < 110 || took > 2000)
    fail_msg("a 120 ms wait took %lld ms", (long long)took);
  EXPECT_TRUE(type == NULL && text == NULL);
  /* Only newer events end a wait: one at `after` itself does not. */
  publish_n(ev, 1, 1);
  EXPECT_RC(nc_events_wait(ev, 1, 50, &type, &text, &seq, &missed), -ETIMEDOUT);
  EXPECT_RC(nc_events_wait(ev, 0, 0, &type, &text, &seq, &missed), 0); /* 0 ms: poll */
  free(type);
  free(text);
}

static void test_ring_overflow_counts_missed(void **state) {
  struct nc_events *ev = *state;
  const int extra = 10;
  publish_n(ev, 1, NC_EVENTS_RING + extra);
  /* A reader at 0 lost the first `extra`; it resumes at the oldest kept. */
  expect_next(ev, 0, extra + 1, extra + 1, extra);
  /* A reader exactly at the edge loses nothing. */
  expect_next(ev, extra, extra + 1, extra + 1, 0);
  expect_next(ev, extra - 1, extra + 1, extra + 1, 1);
  expect_next(ev, NC_EVENTS_RING + extra - 1, NC_EVENTS_RING + extra, NC_EVENTS_RING + extra, 0);
  /* Far behind after many laps. */
  publish_n(ev, NC_EVENTS_RING + extra + 1, 3 * NC_EVENTS_RING);
  expect_next(ev, 0, 2 * NC_EVENTS_RING + 1, 2 * NC_EVENTS_RING + 1, 2 * NC_EVENTS_RING);
}

struct waiter {
  struct nc_events *ev;
  uint64_t after;
  int rc;
  int64_t took_ms;
  char *text;
};

static void *wait_thread(void *arg) {
  struct waiter *w = arg;
  char *type = NULL;
  uint64_t seq, missed;
  int64_t t0 = nct_now_ms();
  w->rc = nc_events_wait(w->ev, w->after, 20000, &type, &w->text, &seq, &missed);
  w->took_ms = nct_now_ms() - t0;
  free(type);
  return NULL;
}

static void test_publish_wakes_waiter(void **state) {
  struct nc_events *ev = *state;
  struct waiter w = {ev, 0, 1, 0, NULL};
  pthread_t t;
  pthread_create(&t, NULL, wait_thread, &w);
  nct_sleep_ms(50);
  publish_n(ev, 7, 7);
  pthread_join(t, NULL);
  EXPECT_RC(w.rc, 0);
  EXPECT_STR(w.text, "{\"n\":7}");
  EXPECT_TRUE(w.took_ms < 5000);
  free(w.text);
}

static void test_close_wakes_all_waiters(void **state) {
  struct nc_events *ev = *state;
  enum { N = 4 };
  struct waiter w[N];
  pthread_t t[N];
  for (int i = 0; i < N; i++) {
    w[i] = (struct waiter){ev, 0, 1, 0, NULL};
    pthread_create(&t[i], NULL, wait_thread, &w[i]);
  }
  nct_sleep_ms(50);
  nc_events_close(ev);
  for (int i = 0; i < N; i++) {
    pthread_join(t[i], NULL);
    EXPECT_RC(w[i].rc, -ECANCELED);
    if (w[i].took_ms > 5000)
      fail_msg("waiter %d took %lld ms to notice the close", i, (long long)w[i].took_ms);
  }
  /* For good: later waits end at once, even with events pending. */
  publish_n(ev, 1, 1);
  char *type, *text;
  uint64_t seq, missed;
  EXPECT_RC(nc_events_wait(ev, 0, 10000, &type, &text, &seq, &missed), -ECANCELED);
}

static void test_free_null(void **state) {
  (void)state;
  nc_events_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_order, setup, teardown),
      cmocka_unit_test_setup_teardown(test_text_is_the_data, setup, teardown),
      cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ring_overflow_counts_missed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_publish_wakes_waiter, setup, teardown),
      cmocka_unit_test_setup_teardown(test_close_wakes_all_waiters, setup, teardown),
      cmocka_unit_test(test_free_null),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
