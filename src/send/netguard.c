/*-------------------------------------------------------------------------
 *
 * netguard.c
 *	  Applies retl.allowed_hosts, retl.deny_private_networks and
 *	  retl.deny_networks (dest/urlpolicy.c) to every request, after DNS
 *	  resolution too.
 *
 * Redirects are never followed (transport.c), so a server cannot send a
 * request on to another host.  The two address settings are checked three
 * times: on the URL, when its host is an address literal (at create time
 * and before every request, with an error that names the address, and
 * whatever proxy curl uses); in curl's open-socket callback, on every
 * address a host name resolves to; and in curl's pre-request callback, on
 * the address of the connection a request goes out on, which covers a
 * connection kept alive from before the setting was turned on.  The
 * callbacks must not raise an error or palloc, so they only refuse and
 * flag the batch.
 *
 *-------------------------------------------------------------------------
 */
#include "run.h"
#include "batch.h"
#include "send.h"
#include "urlpolicy.h"

#include <arpa/inet.h>
#include <sys/socket.h>
/*
 * Curl's open-socket callback: refuses denied addresses once resolved.
 * No palloc and no error here: it only flags the batch.
 */
static curl_socket_t
open_socket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
	RetlBatch  *b = (RetlBatch *) clientp;
	const char *by;

	if (retl_urlpolicy_active() && (by = retl_urlpolicy_address_denied(&addr->addr)) != NULL)
	{
		const struct sockaddr *sa = &addr->addr;

		b->blocked = true;
		b->blocked_by = by;
		if (inet_ntop(sa->sa_family, sa->sa_family == AF_INET ?
					  (const void *) &((const struct sockaddr_in *) sa)->sin_addr :
					  (const void *) &((const struct sockaddr_in6 *) sa)->sin6_addr,
					  b->blocked_addr, sizeof(b->blocked_addr)) == NULL)
			b->blocked_addr[0] = '\0';
		return CURL_SOCKET_BAD;
	}
	return socket(addr->family, addr->socktype, addr->protocol);
}

#if LIBCURL_VERSION_NUM >= 0x075000
/*
 * Curl's pre-request callback (libcurl >= 7.80): runs on a new connection
 * and on a reused one alike, so a connection opened while
 * retl.deny_private_networks was off carries no request once it is on.
 * No palloc and no error here: it only flags the batch.
 */
static int
prereq_cb(void *clientp, char *conn_primary_ip, char *conn_local_ip,
		  int conn_primary_port, int conn_local_port)
{
	RetlBatch  *b = (RetlBatch *) clientp;
	const char *by;

	if (retl_urlpolicy_active() && conn_primary_ip != NULL &&
		(by = retl_urlpolicy_text_denied(conn_primary_ip)) != NULL)
	{
		b->blocked = true;
		b->blocked_by = by;
		strlcpy(b->blocked_addr, conn_primary_ip, sizeof(b->blocked_addr));
		return CURL_PREREQFUNC_ABORT;
	}
	return CURL_PREREQFUNC_OK;
}
#endif

/*
 * Applies the guards to one request: the host and address literal checks
 * now, the address checks when curl opens its socket and before it sends
 * the request on a connection, new or reused.  Returns CURLE_OK, or the
 * code of the option curl refused, named in *failed: a request whose
 * guards are not in place must not go out.
 */
CURLcode
retl_guard_request(RetlBatch *b, CURL *easy, const char **failed)
{
	retl_urlpolicy_check(b->run->dest.url);
	b->blocked = false;
	b->blocked_by = NULL;
	b->blocked_addr[0] = '\0';
	RETL_SETOPT(easy, CURLOPT_OPENSOCKETFUNCTION, open_socket_cb);
	RETL_SETOPT(easy, CURLOPT_OPENSOCKETDATA, b);
#if LIBCURL_VERSION_NUM >= 0x075000
	RETL_SETOPT(easy, CURLOPT_PREREQFUNCTION, prereq_cb);
	RETL_SETOPT(easy, CURLOPT_PREREQDATA, b);
#endif
	return CURLE_OK;
}
