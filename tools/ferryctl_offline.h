/*
 * ferryctl_offline — ferryctl's offline mode (--spool DIR): the answers a
 * running ferryd would give to queue, list and show (net/admin.h's
 * protocol, byte for byte the same format), made from the spool's
 * segment files through the spool view (queue/spool_view.h: read-only,
 * nothing cut or moved), so that ferryctl's one formatter prints both and
 * the two views cannot drift apart. What lives only in ferryd's memory is
 * not there: held and in-flight recipients are ready, and no recipient
 * has a last reply; a deferred one has its attempts and next attempt as
 * journaled.
 */
#ifndef FERRY_TOOLS_FERRYCTL_OFFLINE_H
#define FERRY_TOOLS_FERRYCTL_OFFLINE_H

struct buf;

enum ferryctl_view { FERRYCTL_QUEUE, FERRYCTL_LIST, FERRYCTL_SHOW };

/*
 * Append to answer what ferryd would answer to `view` (with arg: a
 * lower-cased domain for list, an upper-cased queue id for show): "ok"
 * and the body, or "error: <why>". *left_out gets the segments the view
 * had to leave out (corrupt, unreadable), each named on stderr. Returns
 * 0, or -1 when the spool cannot be read at all (said on stderr).
 */
int ferryctl_offline_answer(const char *dir, enum ferryctl_view view, const char *arg,
			    struct buf *answer, unsigned *left_out);

#endif
