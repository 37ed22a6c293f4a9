/*-------------------------------------------------------------------------
 *
 * netguard.c
 *	  Limits where retl may send data: retl.allowed_hosts (host patterns)
 *	  and retl.deny_private_networks (link-local and cloud metadata
 *	  addresses), checked when a destination is created and again for
 *	  every request, after DNS resolution.
 *
 * Redirects are never followed (transport.c), so a server cannot send a
 * request on to another host.  The address check runs in curl's
 * open-socket callback: it must not raise an error or palloc, so it only
 * refuses the socket and flags the batch.
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "utils/guc.h"

char	   *retl_allowed_hosts = NULL;
bool		retl_deny_private_networks = false;

/*
 * Returns the host of a URL, lower-cased, or NULL when it has none.
 */
static char *
url_host(const char *url)
{
	CURLU	   *u = curl_url();
	char	   *host = NULL;
	char	   *result = NULL;

	if (u == NULL)
		return NULL;
	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK)
	{
		result = pstrdup(host);
		for (char *c = result; *c; c++)
			*c = pg_tolower((unsigned char) *c);
	}
	curl_free(host);
	curl_url_cleanup(u);
	return result;
}

/*
 * Does a host match one pattern: "*", an exact name, or "*.suffix"?
 */
static bool
host_matches(const char *host, const char *pattern)
{
	size_t		hl = strlen(host);
	size_t		pl = strlen(pattern);

	if (strcmp(pattern, "*") == 0)
		return true;
	if (pl > 2 && pattern[0] == '*' && pattern[1] == '.')
		return hl > pl - 1 &&
			pg_strcasecmp(host + hl - (pl - 1), pattern + 1) == 0;
	return pg_strcasecmp(host, pattern) == 0;
}

/*
 * Is a host allowed by retl.allowed_hosts?  An empty list allows all.
 */
static bool
host_allowed(const char *host)
{
	char	   *list;
	char	   *tok;
	char	   *save = NULL;

	if (retl_allowed_hosts == NULL || retl_allowed_hosts[0] == '\0')
		return true;
	list = pstrdup(retl_allowed_hosts);
	for (tok = strtok_r(list, ", \t", &save); tok != NULL;
		 tok = strtok_r(NULL, ", \t", &save))
		if (host_matches(host, tok))
			return true;
	return false;
}

/*
 * Raises insufficient_privilege when a destination URL points outside
 * retl.allowed_hosts.  Used at create time and before every request.
 */
void
retl_check_url_allowed(const char *url)
{
	char	   *host = url_host(url);

	if (host == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination URL has no host")));
	if (!host_allowed(host))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("destination host \"%s\" is not in retl.allowed_hosts", host),
				 errhint("A superuser can add it to retl.allowed_hosts.")));
}

/*
 * Is an address link-local, or a cloud metadata address?
 */
static bool
address_denied(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
	{
		uint32		a = ntohl(((const struct sockaddr_in *) sa)->sin_addr.s_addr);

		return (a & 0xffff0000) == 0xa9fe0000;	/* 169.254.0.0/16 */
	}
	if (sa->sa_family == AF_INET6)
	{
		const uint8 *b = ((const struct sockaddr_in6 *) sa)->sin6_addr.s6_addr;
		static const uint8 ec2[16] = {0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0x02, 0x54};

		return (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) ||	/* fe80::/10 */
			memcmp(b, ec2, 16) == 0 ||
		/* IPv4-mapped link-local */
			(memcmp(b, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0 &&
			 b[12] == 169 && b[13] == 254);
	}
	return false;
}

/*
 * Curl's open-socket callback: refuses denied addresses once resolved.
 * No palloc and no error here: it only flags the batch.
 */
static curl_socket_t
open_socket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
	RetlBatch  *b = (RetlBatch *) clientp;

	if (retl_deny_private_networks && address_denied(&addr->addr))
	{
		b->blocked = true;
		return CURL_SOCKET_BAD;
	}
	return socket(addr->family, addr->socktype, addr->protocol);
}

/*
 * Applies the guards to one request: the host check now, the address
 * check when curl opens its socket.
 */
void
retl_guard_request(RetlBatch *b, CURL *easy)
{
	retl_check_url_allowed(b->run->dest.url);
	b->blocked = false;
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, open_socket_cb);
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, b);
}

/*
 * Defines the guard GUCs; only superusers may change them.
 */
void
retl_define_guard_gucs(void)
{
	DefineCustomStringVariable("retl.allowed_hosts",
							   "Hosts that retl may send data to (comma-separated patterns; empty allows all).",
							   "A pattern is a host name, \"*.domain\", or \"*\".",
							   &retl_allowed_hosts, "",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("retl.deny_private_networks",
							 "Refuses link-local and cloud metadata addresses (169.254.0.0/16, fd00:ec2::254).",
							 NULL, &retl_deny_private_networks, false,
							 PGC_SUSET, 0, NULL, NULL, NULL);
}
