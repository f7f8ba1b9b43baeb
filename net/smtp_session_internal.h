/*
 * smtp_session_internal — what the two files of the session state machine
 * share: net/smtp_session.c (replies, the transaction, the commands, the
 * public face) and net/smtp_session_data.c (DATA: the message's way into
 * the store, its body, and the store's callbacks). Not for other modules:
 * their contract is net/smtp_session.h.
 */
#ifndef FERRY_NET_SMTP_SESSION_INTERNAL_H
#define FERRY_NET_SMTP_SESSION_INTERNAL_H

#include <stddef.h>

#include "net/smtp_parse.h"
#include "net/smtp_session.h"

/* Append one reply line (4xx/5xx logged, counted towards max_errors). */
__attribute__((format(printf, 2, 3))) void smtp_reply(struct smtp_session *s, const char *fmt, ...);
/* A reply that closes the session (421). */
__attribute__((format(printf, 2, 3))) void smtp_reply_closing(struct smtp_session *s,
							      const char *fmt, ...);
/* Shutting down and no transaction left: 421, close. */
void smtp_drain_if_idle(struct smtp_session *s);
/* Forget the transaction (a message in the store is aborted). */
void smtp_transaction_reset(struct smtp_session *s);
/* A span of the envelope text. */
const char *smtp_envelope_at(const struct smtp_session *s, struct smtp_recipient_span sp);

/* smtp_session_data.c: the DATA command, and the body fed while in DATA
 * (returns the octets used). */
void smtp_handle_data(struct smtp_session *s, const struct smtp_command *cmd);
size_t smtp_data_feed(struct smtp_session *s, const char *data, size_t len);

#endif
