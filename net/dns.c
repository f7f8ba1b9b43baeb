#include "net/dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/check.h"
#include "core/list.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/timer.h"
#include "core/worker.h"

/* A socket c-ares asked us to watch, and its one-shot poll. */
struct dns_watch {
	struct worker_op op;
	struct dns *dns;
	struct list_node link; /* d->watches */
	ares_socket_t fd;
	short mask;       /* what c-ares wants now: POLLIN, POLLOUT */
	short armed_mask; /* what the poll in flight waits for */
	bool armed;       /* a poll is in flight (or its completion is running) */
	bool completing;  /* its completion is running */
	bool cancel_sent; /* a cancel of the armed poll is on its way */
	bool dead;        /* c-ares closed the socket: free once the poll is back */
	bool stalled;     /* the poll failed: leave it to c-ares's timeouts */
};

enum dns_kind { DNS_KIND_MX, DNS_KIND_HOST };

struct dns_query {
	struct dns *dns;
	struct list_node ready_link; /* d->ready: answered, callback not run yet */
	enum dns_kind kind;
	bool dropped;     /* cancelled by its owner, or drained: no callback */
	unsigned pending; /* c-ares queries not called back yet */
	void *arg;
	union {
		dns_mx_fn *mx;
		dns_host_fn *host;
	} done;
	uint16_t port;
	int status_a, status_aaaa; /* host: each query's c-ares status */
	unsigned n4, n6;
	struct in_addr a4[DNS_HOST_MAX];
	struct in6_addr a6[DNS_HOST_MAX];
	struct dns_mx_result mx;
	struct dns_host_result host;
};

struct dns {
	struct worker *worker;
	ares_channel channel; /* NULL once destroyed */
	struct list_node watches;
	struct list_node ready;
	struct timer timer; /* c-ares's next timeout, or at once for ready results */
	uint64_t seed;      /* dns_mx_order's PRNG */
	unsigned queries;   /* struct dns_query alive */
	unsigned polls;     /* polls in flight */
	bool in_ares;       /* inside a call into c-ares */
	bool delivering;    /* running the owners' callbacks */
	bool closing;       /* dns_close() called: free when nothing is in flight */
	uint64_t lookups[2][DNS_NSTATUSES]; /* by kind (MX, host) and result: the metrics */
};

/* ---- ordering ----------------------------------------------------------- */

/* splitmix64: tiny and good enough to spread load over equal MXes. */
static uint64_t dns_random(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static void dns_mx_swap(struct dns_mx *a, struct dns_mx *b)
{
	struct dns_mx t = *a;
	*a = *b;
	*b = t;
}

void dns_mx_order(struct dns_mx *mx, unsigned n, uint64_t *seed)
{
	/* Insertion sort: MX lists are short, and it is stable. */
	for (unsigned i = 1; i < n; i++)
		for (unsigned j = i; j > 0 && mx[j - 1].preference > mx[j].preference; j--)
			dns_mx_swap(&mx[j - 1], &mx[j]);
	for (unsigned start = 0; start < n;) {
		unsigned end = start + 1;
		while (end < n && mx[end].preference == mx[start].preference)
			end++;
		for (unsigned i = end - 1; i > start; i--) { /* Fisher-Yates */
			unsigned j = start + (unsigned)(dns_random(seed) % (i - start + 1));
			dns_mx_swap(&mx[i], &mx[j]);
		}
		start = end;
	}
}

/* ---- watching c-ares's sockets -------------------------------------------- */

static void dns_poll_complete(struct worker_op *op, const struct io_uring_cqe *cqe);

static void dns_watch_arm(struct dns_watch *wa)
{
	struct dns *d = wa->dns;
	if (wa->armed || wa->dead || wa->stalled || wa->mask == 0 || d->closing)
		return;
	struct io_uring_sqe *sqe = worker_sqe(d->worker);
	io_uring_prep_poll_add(sqe, wa->fd, (unsigned)wa->mask);
	worker_sqe_set_op(sqe, &wa->op);
	wa->armed = true;
	wa->armed_mask = wa->mask;
	d->polls++;
}

/* Take back the armed poll; its completion (-ECANCELED, or the events if
 * it won the race) comes back all the same. */
static void dns_watch_cancel(struct dns_watch *wa)
{
	if (!wa->armed || wa->completing || wa->cancel_sent)
		return;
	struct io_uring_sqe *sqe = worker_sqe(wa->dns->worker);
	io_uring_prep_cancel(sqe, &wa->op, 0);
	worker_sqe_set_op(sqe, NULL);
	wa->cancel_sent = true;
}

/* c-ares closed the socket. The poll holds the file, and the number may
 * be reused by c-ares's next socket: the watch leaves the fd lookup now
 * and its memory stays until the poll is back. */
static void dns_watch_kill(struct dns_watch *wa)
{
	wa->dead = true;
	wa->mask = 0;
	if (wa->armed) {
		dns_watch_cancel(wa);
		return;
	}
	list_remove(&wa->link);
	free(wa);
}

static struct dns_watch *dns_watch_find(struct dns *d, ares_socket_t fd)
{
	struct dns_watch *wa;
	list_for_each_entry(wa, &d->watches, link)
	{
		if (wa->fd == fd && !wa->dead)
			return wa;
	}
	return NULL;
}

static void dns_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns *d = data;
	struct dns_watch *wa = dns_watch_find(d, fd);
	short mask = (short)((readable ? POLLIN : 0) | (writable ? POLLOUT : 0));
	if (mask == 0) {
		if (wa != NULL)
			dns_watch_kill(wa);
		return;
	}
	if (wa == NULL) {
		wa = calloc(1, sizeof(*wa));
		if (wa == NULL) {
			/* Unwatched, its queries end by c-ares's timeout. */
			log_event(LOG_LEVEL_ERROR,
				  "event=dns_error error=\"out of memory watching a DNS socket\"");
			return;
		}
		wa->op.complete = dns_poll_complete;
		wa->dns = d;
		wa->fd = fd;
		list_insert_tail(&d->watches, &wa->link);
	}
	wa->mask = mask;
	if (wa->armed && wa->armed_mask != mask)
		dns_watch_cancel(wa); /* re-armed with the new mask when it is back */
	dns_watch_arm(wa);
}

/* ---- results ---------------------------------------------------------------- */

static void dns_query_free(struct dns_query *q)
{
	if (list_linked(&q->ready_link))
		list_remove(&q->ready_link);
	free(q->mx.mx);
	q->dns->queries--;
	free(q);
}

static enum dns_status dns_status_of(int ares_status)
{
	switch (ares_status) {
	case ARES_SUCCESS:
		return DNS_OK;
	case ARES_ENODATA:
		return DNS_NODATA;
	case ARES_ENOTFOUND: /* NXDOMAIN */
	case ARES_EBADNAME:  /* no such name can exist */
		return DNS_NXDOMAIN;
	default:
		return DNS_TEMPFAIL;
	}
}

static bool dns_name_is_root(const char *host)
{
	return host[0] == '\0' || strcmp(host, ".") == 0;
}

static void dns_mx_fill(struct dns_query *q, int status, const unsigned char *abuf, int alen)
{
	struct dns_mx_result *r = &q->mx;
	struct ares_mx_reply *list = NULL;
	if (status == ARES_SUCCESS)
		status = ares_parse_mx_reply(abuf, alen, &list);
	r->status = dns_status_of(status);
	r->reason = ares_strerror(status);
	if (status != ARES_SUCCESS)
		return;
	unsigned n = 0, kept = 0;
	for (struct ares_mx_reply *m = list; m != NULL; m = m->next) {
		n++;
		if (!dns_name_is_root(m->host) && strlen(m->host) <= DNS_NAME_MAX)
			kept++;
	}
	if (kept == 0) {
		/* A null MX, or only roots: nowhere to deliver to either way. */
		r->status = DNS_NULL_MX;
		r->reason = n == 1 && list->priority == 0 ? "null MX (RFC 7505)"
							  : "the only MX records are \".\"";
		ares_free_data(list);
		return;
	}
	r->mx = calloc(kept, sizeof(*r->mx));
	if (r->mx == NULL) {
		r->status = DNS_TEMPFAIL;
		r->reason = ares_strerror(ARES_ENOMEM);
		ares_free_data(list);
		return;
	}
	for (struct ares_mx_reply *m = list; m != NULL; m = m->next) {
		if (dns_name_is_root(m->host) || strlen(m->host) > DNS_NAME_MAX)
			continue;
		struct dns_mx *x = &r->mx[r->count++];
		size_t len = strlen(m->host);
		if (len > 1 && m->host[len - 1] == '.')
			len--;
		memcpy(x->host, m->host, len);
		x->host[len] = '\0';
		x->preference = m->priority;
	}
	ares_free_data(list);
	dns_mx_order(r->mx, r->count, &q->dns->seed);
}

static void dns_host_fill(struct dns_query *q)
{
	struct dns_host_result *r = &q->host;
	for (unsigned i = 0; i < q->n4 && r->count < DNS_HOST_MAX; i++) {
		struct sockaddr_in *in = &r->addr[r->count++].in;
		in->sin_family = AF_INET;
		in->sin_port = htons(q->port);
		in->sin_addr = q->a4[i];
	}
	for (unsigned i = 0; i < q->n6 && r->count < DNS_HOST_MAX; i++) {
		struct sockaddr_in6 *in6 = &r->addr[r->count++].in6;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(q->port);
		in6->sin6_addr = q->a6[i];
	}
	if (r->count > 0) {
		r->status = DNS_OK;
		r->reason = ares_strerror(ARES_SUCCESS);
		return;
	}
	/* Nothing: the worse of the two answers decides. */
	enum dns_status s4 = dns_status_of(q->status_a), s6 = dns_status_of(q->status_aaaa);
	int worst = q->status_a;
	if (s6 == DNS_TEMPFAIL || (s4 != DNS_TEMPFAIL && s6 == DNS_NXDOMAIN))
		worst = q->status_aaaa;
	r->status = dns_status_of(worst);
	if (r->status == DNS_OK) /* both parsed, neither had a record */
		r->status = DNS_NODATA;
	r->reason = ares_strerror(r->status == DNS_NODATA ? ARES_ENODATA : worst);
}

/* A c-ares query of q has called back. ECANCELLED and EDESTRUCTION come
 * only from our own dns_drain() and dns_close(): the owner has let go. */
static bool dns_query_answered(struct dns_query *q, int status)
{
	CHECK(q->pending > 0);
	q->pending--;
	if (status == ARES_ECANCELLED || status == ARES_EDESTRUCTION)
		q->dropped = true;
	if (q->pending > 0)
		return false;
	if (q->dropped) {
		dns_query_free(q);
		return false;
	}
	return true;
}

static void dns_query_ready(struct dns_query *q)
{
	list_insert_tail(&q->dns->ready, &q->ready_link);
}

static void dns_mx_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_query *q = arg;
	(void)timeouts;
	if (!dns_query_answered(q, status))
		return;
	dns_mx_fill(q, status, abuf, alen);
	dns_query_ready(q);
}

static void dns_host_answer(struct dns_query *q, int family, int status, const unsigned char *abuf,
			    int alen)
{
	if (family == AF_INET) {
		struct ares_addrttl a[DNS_HOST_MAX];
		int n = DNS_HOST_MAX;
		if (status == ARES_SUCCESS)
			status = ares_parse_a_reply(abuf, alen, NULL, a, &n);
		for (int i = 0; status == ARES_SUCCESS && i < n; i++)
			q->a4[q->n4++] = a[i].ipaddr;
		q->status_a = status;
	} else {
		struct ares_addr6ttl a[DNS_HOST_MAX];
		int n = DNS_HOST_MAX;
		if (status == ARES_SUCCESS)
			status = ares_parse_aaaa_reply(abuf, alen, NULL, a, &n);
		for (int i = 0; status == ARES_SUCCESS && i < n; i++)
			memcpy(&q->a6[q->n6++], &a[i].ip6addr, sizeof(struct in6_addr));
		q->status_aaaa = status;
	}
}

static void dns_a_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_query *q = arg;
	(void)timeouts;
	if (status != ARES_ECANCELLED && status != ARES_EDESTRUCTION)
		dns_host_answer(q, AF_INET, status, abuf, alen);
	if (!dns_query_answered(q, status))
		return;
	dns_host_fill(q);
	dns_query_ready(q);
}

static void dns_aaaa_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_query *q = arg;
	(void)timeouts;
	if (status != ARES_ECANCELLED && status != ARES_EDESTRUCTION)
		dns_host_answer(q, AF_INET6, status, abuf, alen);
	if (!dns_query_answered(q, status))
		return;
	dns_host_fill(q);
	dns_query_ready(q);
}

/* ---- the loop's side ---------------------------------------------------------- */

static void dns_close_finish(struct dns *d);

/* Run the owners' callbacks, outside c-ares, so that they may start
 * lookups, cancel others, drain or close. */
static void dns_deliver(struct dns *d)
{
	d->delivering = true;
	struct list_node *n;
	while (!d->closing && (n = list_first(&d->ready)) != NULL) {
		struct dns_query *q = container_of(n, struct dns_query, ready_link);
		list_remove(n);
		enum dns_status st = q->kind == DNS_KIND_MX ? q->mx.status : q->host.status;
		d->lookups[q->kind == DNS_KIND_MX ? 0 : 1][st]++;
		if (q->kind == DNS_KIND_MX)
			q->done.mx(q->arg, &q->mx);
		else
			q->done.host(q->arg, &q->host);
		dns_query_free(q);
	}
	d->delivering = false;
}

/* When c-ares next needs a look: its earliest timeout, or at once when
 * answers wait for their callbacks. */
static void dns_timer_update(struct dns *d)
{
	struct worker *w = d->worker;
	uint64_t delay = 0;
	if (list_empty(&d->ready)) {
		struct timeval tv;
		if (ares_timeout(d->channel, NULL, &tv) == NULL) {
			timer_cancel(&w->timers, &d->timer);
			return;
		}
		delay = (uint64_t)tv.tv_sec * 1000 + ((uint64_t)tv.tv_usec + 999) / 1000;
	}
	timer_arm(&w->timers, &d->timer, w->now_ms, delay);
}

static void dns_maybe_free(struct dns *d)
{
	if (!d->closing || d->delivering || d->channel != NULL || d->polls > 0)
		return;
	CHECK(list_empty(&d->watches) && list_empty(&d->ready) && d->queries == 0);
	free(d);
}

/* Let c-ares read, write or time out; then the owners hear. May free d
 * (a callback closed it) unless a poll's completion is running. */
static void dns_run(struct dns *d, ares_socket_t read_fd, ares_socket_t write_fd)
{
	if (!d->closing) {
		d->in_ares = true;
		ares_process_fd(d->channel, read_fd, write_fd);
		d->in_ares = false;
		dns_deliver(d);
	}
	if (d->closing)
		dns_close_finish(d);
	else
		dns_timer_update(d);
}

static void dns_timer_fire(struct timer *t)
{
	struct dns *d = container_of(t, struct dns, timer);
	dns_run(d, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
}

static void dns_poll_complete(struct worker_op *op, const struct io_uring_cqe *cqe)
{
	struct dns_watch *wa = container_of(op, struct dns_watch, op);
	struct dns *d = wa->dns;
	wa->completing = true; /* keeps wa, and d, alive through dns_run */
	if (!wa->dead && !d->closing && cqe->res != -ECANCELED) {
		ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;
		if (cqe->res < 0) {
			/* Not for a socket c-ares still has: let it meet the
			 * error itself, and poll no more (no busy loop). */
			wa->stalled = true;
			rfd = wa->fd;
		} else {
			if (cqe->res & (POLLIN | POLLERR | POLLHUP))
				rfd = wa->fd;
			if (cqe->res & POLLOUT)
				wfd = wa->fd;
		}
		dns_run(d, rfd, wfd);
	}
	wa->completing = false;
	wa->armed = false;
	wa->cancel_sent = false;
	d->polls--;
	if (wa->dead) {
		list_remove(&wa->link);
		free(wa);
	} else {
		dns_watch_arm(wa);
	}
	dns_maybe_free(d);
}

/* ---- life ------------------------------------------------------------------------ */

static pthread_once_t dns_library_once = PTHREAD_ONCE_INIT;
static int dns_library_status;

static void dns_library_init(void)
{
	dns_library_status = ares_library_init(ARES_LIB_INIT_ALL);
}

int dns_check_servers(const char *servers, char *err, size_t err_size)
{
	if (servers == NULL || servers[0] == '\0')
		return 0;
	pthread_once(&dns_library_once, dns_library_init);
	ares_channel channel;
	struct ares_options o = {0};
	if (dns_library_status != ARES_SUCCESS ||
	    ares_init_options(&channel, &o, 0) != ARES_SUCCESS) {
		snprintf(err, err_size, "dns: cannot set up c-ares to check the servers");
		return -EIO;
	}
	int r = ares_set_servers_ports_csv(channel, servers);
	ares_destroy(channel);
	if (r == ARES_SUCCESS)
		return 0;
	snprintf(err, err_size,
		 "dns servers '%s': not a list of IP addresses with optional ports (e.g. "
		 "127.0.0.1:53,[::1]:53): %s",
		 servers, ares_strerror(r));
	return -EINVAL;
}

int dns_open(struct dns **out, struct worker *w, const struct dns_config *cfg, char *err,
	     size_t err_size)
{
	*out = NULL;
	pthread_once(&dns_library_once, dns_library_init);
	if (dns_library_status != ARES_SUCCESS) {
		snprintf(err, err_size, "dns: cannot initialise c-ares: %s",
			 ares_strerror(dns_library_status));
		return -EIO;
	}
	struct dns *d = calloc(1, sizeof(*d));
	if (d == NULL) {
		snprintf(err, err_size, "dns: out of memory");
		return -ENOMEM;
	}
	d->worker = w;
	list_init(&d->watches);
	list_init(&d->ready);
	timer_init(&d->timer, dns_timer_fire);
	if (getrandom(&d->seed, sizeof(d->seed), GRND_NONBLOCK) != sizeof(d->seed))
		d->seed = worker_clock_ms() ^ ((uint64_t)w->index << 32);

	struct ares_options o = {
		.sock_state_cb = dns_sock_state,
		.sock_state_cb_data = d,
		.timeout = (int)cfg->timeout_ms,
		.tries = (int)cfg->tries,
	};
	int mask = ARES_OPT_SOCK_STATE_CB;
	if (cfg->timeout_ms > 0)
		mask |= ARES_OPT_TIMEOUTMS;
	if (cfg->tries > 0)
		mask |= ARES_OPT_TRIES;
	int r = ares_init_options(&d->channel, &o, mask);
	if (r != ARES_SUCCESS) {
		snprintf(err, err_size, "dns: cannot set up the resolver: %s", ares_strerror(r));
		free(d);
		return r == ARES_ENOMEM ? -ENOMEM : -EIO;
	}
	const char *servers = cfg->servers != NULL ? cfg->servers : "";
	if (servers[0] != '\0') {
		r = ares_set_servers_ports_csv(d->channel, servers);
		if (r != ARES_SUCCESS) {
			snprintf(err, err_size,
				 "dns servers '%s': not a list of IP addresses with optional ports "
				 "(e.g. 127.0.0.1:53,[::1]:53): %s",
				 servers, ares_strerror(r));
			ares_destroy(d->channel);
			free(d);
			return r == ARES_ENOMEM ? -ENOMEM : -EINVAL;
		}
	}
	*out = d;
	return 0;
}

/* Drop every answer not delivered yet. */
static void dns_drop_ready(struct dns *d)
{
	struct list_node *n;
	while ((n = list_first(&d->ready)) != NULL)
		dns_query_free(container_of(n, struct dns_query, ready_link));
}

void dns_drain(struct dns *d)
{
	CHECK(!d->in_ares && !d->closing);
	/* Every query calls back with ECANCELLED (dropped); with none left,
	 * c-ares closes its sockets, which removes their polls. */
	d->in_ares = true;
	ares_cancel(d->channel);
	d->in_ares = false;
	dns_drop_ready(d);
	dns_timer_update(d);
}

bool dns_idle(const struct dns *d)
{
	return d->queries == 0 && d->polls == 0;
}

/* Destroy the channel and free what has nothing in flight. */
static void dns_close_finish(struct dns *d)
{
	if (d->channel != NULL) {
		d->in_ares = true;
		ares_destroy(d->channel); /* queries: EDESTRUCTION; sockets: closed */
		d->in_ares = false;
		d->channel = NULL;
	}
	dns_drop_ready(d);
	timer_cancel(&d->worker->timers, &d->timer);
	struct dns_watch *wa, *next;
	list_for_each_entry_safe(wa, next, &d->watches, link)
	{
		if (!wa->dead)
			dns_watch_kill(wa);
	}
	dns_maybe_free(d);
}

void dns_close(struct dns *d)
{
	if (d == NULL)
		return;
	CHECK(!d->in_ares && !d->closing);
	d->closing = true;
	if (d->delivering)
		return; /* dns_run finishes it once the callback is back */
	dns_close_finish(d);
}

/* ---- lookups ------------------------------------------------------------------ */

static int dns_query_new(struct dns *d, const char *name, enum dns_kind kind, void *arg,
			 struct dns_query **out)
{
	CHECK(!d->in_ares && !d->closing);
	size_t len = strlen(name);
	if (len == 0 || len > 253 + (name[len - 1] == '.'))
		return -EINVAL;
	struct dns_query *q = calloc(1, sizeof(*q));
	if (q == NULL)
		return -ENOMEM;
	q->dns = d;
	q->kind = kind;
	q->arg = arg;
	d->queries++;
	*out = q;
	return 0;
}

/* After the query went to c-ares (or was answered on the spot). */
static void dns_query_started(struct dns *d, struct dns_query *q, struct dns_query **handle)
{
	*handle = q;
	dns_timer_update(d); /* an answer given at once is delivered by it */
}

int dns_lookup_mx(struct dns *d, const char *domain, dns_mx_fn *done, void *arg,
		  struct dns_query **handle)
{
	struct dns_query *q;
	int r = dns_query_new(d, domain, DNS_KIND_MX, arg, &q);
	if (r < 0)
		return r;
	q->done.mx = done;
	q->pending = 1;
	d->in_ares = true;
	ares_query(d->channel, domain, ns_c_in, ns_t_mx, dns_mx_answer, q);
	d->in_ares = false;
	dns_query_started(d, q, handle);
	return 0;
}

/* An address literal needs no query; it is answered from the loop all
 * the same. */
static bool dns_host_literal(struct dns_query *q, const char *host)
{
	if (inet_pton(AF_INET, host, &q->a4[0]) == 1)
		q->n4 = 1;
	else if (inet_pton(AF_INET6, host, &q->a6[0]) == 1)
		q->n6 = 1;
	else
		return false;
	dns_host_fill(q);
	dns_query_ready(q);
	return true;
}

int dns_lookup_host(struct dns *d, const char *host, uint16_t port, dns_host_fn *done, void *arg,
		    struct dns_query **handle)
{
	struct dns_query *q;
	int r = dns_query_new(d, host, DNS_KIND_HOST, arg, &q);
	if (r < 0)
		return r;
	q->done.host = done;
	q->port = port;
	if (!dns_host_literal(q, host)) {
		q->pending = 2;
		d->in_ares = true;
		ares_query(d->channel, host, ns_c_in, ns_t_a, dns_a_answer, q);
		ares_query(d->channel, host, ns_c_in, ns_t_aaaa, dns_aaaa_answer, q);
		d->in_ares = false;
	}
	dns_query_started(d, q, handle);
	return 0;
}

void dns_cancel(struct dns_query *q)
{
	CHECK(!q->dropped);
	q->dropped = true;
	if (list_linked(&q->ready_link))
		dns_query_free(q); /* answered, not delivered yet */
				   /* else c-ares still has it: freed when it calls back */
}

static const struct metric_family dns_lookups = {
	"ferry_dns_lookups_total",
	"DNS lookups of delivery (MX, and a host's A and AAAA records), by result.",
	METRIC_COUNTER,
	METRIC_SUM,
	NULL,
	0};

void dns_metrics(const struct dns *d, struct metrics *out)
{
	static const char *const results[DNS_NSTATUSES] = {
		[DNS_OK] = "ok",           [DNS_NXDOMAIN] = "nxdomain",
		[DNS_NODATA] = "nodata",   [DNS_TEMPFAIL] = "tempfail",
		[DNS_NULL_MX] = "null_mx",
	};
	for (unsigned k = 0; k < 2; k++)
		for (unsigned i = 0; i < DNS_NSTATUSES; i++) {
			char labels[64];
			snprintf(labels, sizeof(labels), "type=\"%s\",result=\"%s\"",
				 k == 0 ? "mx" : "host", results[i]);
			metrics_add(out, &dns_lookups, labels,
				    d != NULL ? (double)d->lookups[k][i] : 0);
		}
}
