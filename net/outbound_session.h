/*
 * outbound_session — one SMTP client connection to a next hop, delivering
 * message after message for one destination (after OpenSMTPD's
 * mta_session.c). The conversation itself is net/smtp_client.c's; this
 * puts it on a conn, runs its timeouts, streams each body from the spool
 * (queue/body.h) as fast as the server reads it, and reports every
 * recipient's outcome to its pool (net/outbound.h).
 *
 * Life: connect (connect_timeout) -> greeting, EHLO -> READY -> take a
 * message from the pool -> MAIL/RCPT/DATA -> body -> outcomes -> RSET ->
 * READY ... -> nothing to take for connection_reuse_time: QUIT. A failure
 * anywhere defers the recipients in hand (their outcome is the reply that
 * said so, or what broke) and closes the connection.
 *
 * Ownership: the pool starts a session; the session frees itself once its
 * conn has closed, and tells the pool then (outbound_session_gone).
 * Outcomes of a message are reported only after its body reader has let
 * go of it: the last outcome may end the message.
 */
#ifndef FERRY_NET_OUTBOUND_SESSION_H
#define FERRY_NET_OUTBOUND_SESSION_H

#include <stdbool.h>

#include "net/dns.h"

#include "core/list.h"

struct outbound_dest;
struct outbound_session;
struct outbound_target;

/* Open a connection for d to one of its route's targets. 0, or -errno
 * when not even a socket could be made (nothing to undo then). */
int outbound_session_start(struct outbound_dest *d, const struct outbound_target *t);

/* Idle sessions of a destination (on d->idle): hand one new work. */
void outbound_session_wake(struct outbound_session *s);

/* An idle session connected to this address (port included)? Then it
 * can take another destination's mail: domains that share a next hop
 * share its connections. */
bool outbound_session_idle_at(const struct outbound_session *s, const union dns_address *a);
/* Move an idle session to destination `to` and hand it to's work. */
void outbound_session_adopt(struct outbound_session *s, struct outbound_dest *to);

/* Shutdown: QUIT now if idle; a session in a transaction finishes it. */
void outbound_session_drain(struct outbound_session *s);

/* A reload changed its destination's next hops: it takes no new
 * message (one in hand is finished), and QUITs once idle. */
void outbound_session_retire(struct outbound_session *s);
/* The destination it works for now. */
const struct outbound_dest *outbound_session_dest(const struct outbound_session *s);

/* Shutdown's deadline: the connection is cut at once; its recipients go
 * back to READY untried. */
void outbound_session_cut(struct outbound_session *s);

/* Where it stands, for the metrics: 0 connecting (not greeted yet), 1
 * delivering (a transaction in hand), 2 idle, 3 closing (QUIT, or gone
 * wrong and going). */
unsigned outbound_session_state(const struct outbound_session *s);

/* For the pool's lists. */
struct list_node *outbound_session_idle_link(struct outbound_session *s);
struct outbound_session *outbound_session_of_idle_link(struct list_node *link);
struct outbound_session *outbound_session_of_all_link(struct list_node *link);

#endif
