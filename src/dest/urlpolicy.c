/*-------------------------------------------------------------------------
 *
 * urlpolicy.c
 *	  Where retl may send data: retl.allowed_hosts (host patterns),
 *	  retl.deny_private_networks (link-local and cloud metadata addresses)
 *	  and retl.deny_networks (a CIDR list), and the checks of a URL and of
 *	  an address against them.
 *
 * A destination's URL is checked when the destination is created (dest.c)
 * and again before every request (send/netguard.c), which also checks, in
 * curl's callbacks, every address a host name resolves to and the address
 * of the connection a request goes out on.  So the address checks here
 * take no palloc and raise no error: curl's callbacks use them.
 *
 *-------------------------------------------------------------------------
 */
#include "urlpolicy.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>

#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inet.h"


static char *retl_allowed_hosts = NULL;
static bool retl_deny_private_networks = false;
static char *retl_deny_networks = NULL;

/* One network of retl.deny_networks: an address and its prefix length. */
typedef struct DenyNet
{
	bool		v6;
	int			bits;
	uint8		addr[16];		/* network byte order */
} DenyNet;

/* retl.deny_networks parsed by its check hook (malloc'd, as GUC extras). */
typedef struct DenyList
{
	int			n;
	DenyNet		nets[FLEXIBLE_ARRAY_MEMBER];
} DenyList;

static DenyList *deny_list = NULL;

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
 * Is addr (network byte order) inside net?  Compares the whole bytes of
 * the prefix, then the bits of the last, partial one.
 */
static bool
net_contains(const DenyNet *net, const uint8 *addr)
{
	int			whole = net->bits / 8;
	int			rest = net->bits % 8;

	if (memcmp(net->addr, addr, whole) != 0)
		return false;
	return rest == 0 ||
		((net->addr[whole] ^ addr[whole]) & (uint8) (0xff << (8 - rest))) == 0;
}

/*
 * Is an address (network byte order, 4 or 16 bytes) in retl.deny_networks?
 * No palloc and no error: curl's callbacks use it.
 */
static bool
listed(const uint8 *addr, bool v6)
{
	if (deny_list == NULL)
		return false;
	for (int i = 0; i < deny_list->n; i++)
		if (deny_list->nets[i].v6 == v6 &&
			net_contains(&deny_list->nets[i], addr))
			return true;
	return false;
}

/*
 * Which setting refuses an IPv4 address (in host byte order), or NULL:
 * retl.deny_private_networks refuses link-local, 169.254.0.0/16, where the
 * cloud metadata services answer (169.254.169.254); retl.deny_networks
 * the networks it lists.
 */
static const char *
ipv4_denied(uint32 a)
{
	uint8		b[4] = {a >> 24, (a >> 16) & 0xff, (a >> 8) & 0xff, a & 0xff};

	if (retl_deny_private_networks && (a & 0xffff0000) == 0xa9fe0000)
		return "retl.deny_private_networks";
	if (listed(b, false))
		return "retl.deny_networks";
	return NULL;
}

/*
 * Which setting refuses an IPv6 address, or NULL: link-local (fe80::/10)
 * and the EC2 metadata address fd00:ec2::254 (deny_private_networks), the
 * networks of retl.deny_networks, and an IPv4 address that ipv4_denied
 * refuses written as IPv4-mapped (::ffff:0:0/96), IPv4-compatible (::/96)
 * or NAT64 (64:ff9b::/96).
 */
static const char *
ipv6_denied(const uint8 *b)
{
	static const uint8 ec2[16] = {0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0x02, 0x54};
	static const uint8 mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	static const uint8 compat[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
	static const uint8 nat64[12] = {0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0,
	0, 0, 0, 0};

	if (retl_deny_private_networks &&
		((b[0] == 0xfe && (b[1] & 0xc0) == 0x80) || memcmp(b, ec2, 16) == 0))
		return "retl.deny_private_networks";
	if (listed(b, true))
		return "retl.deny_networks";
	if (memcmp(b, mapped, 12) == 0 || memcmp(b, compat, 12) == 0 ||
		memcmp(b, nat64, 12) == 0)
		return ipv4_denied(((uint32) b[12] << 24) | ((uint32) b[13] << 16) |
						   ((uint32) b[14] << 8) | (uint32) b[15]);
	return NULL;
}

/*
 * Is any address refused at all?  Both settings off: nothing to check.
 */
bool
retl_urlpolicy_active(void)
{
	return retl_deny_private_networks || (deny_list != NULL && deny_list->n > 0);
}

/*
 * Which setting refuses a socket address, or NULL.
 */
const char *
retl_urlpolicy_address_denied(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ipv4_denied(ntohl(((const struct sockaddr_in *) sa)->sin_addr.s_addr));
	if (sa->sa_family == AF_INET6)
		return ipv6_denied(((const struct sockaddr_in6 *) sa)->sin6_addr.s6_addr);
	return NULL;
}

/*
 * Which setting refuses a textual address, or NULL?  It takes what
 * inet_aton (any numeric IPv4 form the resolver takes) or
 * inet_pton(AF_INET6) does, with or without brackets, an IPv6 zone or one
 * trailing dot; anything else (a host name) is not refused here.  No
 * palloc and no error: curl's callbacks use it.
 */
const char *
retl_urlpolicy_text_denied(const char *text)
{
	char		buf[64];
	size_t		len = strlen(text);
	struct in_addr a4;
	struct in6_addr a6;
	char	   *zone;

	if (len >= 2 && text[0] == '[' && text[len - 1] == ']')
	{
		text++;
		len -= 2;
	}
	if (len == 0 || len >= sizeof(buf))
		return NULL;
	memcpy(buf, text, len);
	buf[len] = '\0';
	if (buf[len - 1] == '.')
		buf[len - 1] = '\0';
	if ((zone = strchr(buf, '%')) != NULL)
		*zone = '\0';
	if (strchr(buf, ':') != NULL)
		return inet_pton(AF_INET6, buf, &a6) == 1 ? ipv6_denied(a6.s6_addr) : NULL;
	return inet_aton(buf, &a4) != 0 ? ipv4_denied(ntohl(a4.s_addr)) : NULL;
}

/*
 * Raises insufficient_privilege when a destination URL points outside
 * retl.allowed_hosts, or, with retl.deny_private_networks on, at an
 * address literal that it refuses (host names are checked once resolved,
 * in send/netguard.c's curl callbacks).  Used at create time and before
 * every request.
 */
void
retl_urlpolicy_check(const char *url)
{
	char	   *host = url_host(url);
	const char *by;

	if (host == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination URL has no host")));
	if (!host_allowed(host))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("destination host \"%s\" is not in retl.allowed_hosts", host),
				 errhint("A superuser can add it to retl.allowed_hosts.")));
	if (retl_urlpolicy_active() && (by = retl_urlpolicy_text_denied(host)) != NULL)
	{
		if (strcmp(by, "retl.deny_networks") == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("destination address \"%s\" is in a network that retl.deny_networks refuses",
							host),
					 errdetail("retl.deny_networks is \"%s\".", retl_deny_networks),
					 errhint("A superuser can change retl.deny_networks.")));
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("destination address \"%s\" is link-local or a cloud metadata address, which retl.deny_private_networks refuses",
						host),
				 errdetail("retl.deny_private_networks refuses 169.254.0.0/16, fe80::/10 and fd00:ec2::254, also as IPv4-mapped, IPv4-compatible or NAT64 IPv6 addresses.")));
	}
}


/*
 * Parses one network of retl.deny_networks ("10.0.0.0/8", "::1",
 * "fc00::/7"; an address alone is one host) with PostgreSQL's inet parser.
 * Returns false, with the reason as the GUC error detail, when it is not
 * a network or has bits set right of its prefix.
 */
static bool
parse_net(const char *tok, DenyNet *net)
{
	int			nbytes;

	memset(net, 0, sizeof(DenyNet));
	net->v6 = strchr(tok, ':') != NULL;
	nbytes = net->v6 ? 16 : 4;
	net->bits = pg_inet_net_pton(net->v6 ? PGSQL_AF_INET6 : PGSQL_AF_INET,
								 tok, net->addr, -1);
	if (net->bits < 0 || net->bits > nbytes * 8)
	{
		GUC_check_errdetail("\"%s\" is not a network in CIDR notation, such as 10.0.0.0/8 or fc00::/7.",
							tok);
		return false;
	}
	for (int i = 0; i < nbytes; i++)
	{
		int			keep = Max(0, Min(8, net->bits - 8 * i));

		if ((net->addr[i] & (uint8) (0xff >> keep)) != 0 && keep < 8)
		{
			GUC_check_errdetail("\"%s\" has bits set to the right of its prefix length.",
								tok);
			return false;
		}
	}
	return true;
}

/*
 * Check hook of retl.deny_networks: parses the comma-separated list once,
 * into a malloc'd DenyList that the assign hook installs, so that curl's
 * callbacks only compare bytes.
 */
static bool
check_deny_networks(char **newval, void **extra, GucSource source)
{
	char	   *list = pstrdup(*newval ? *newval : "");
	char	   *save = NULL;
	int			max = 1;
	DenyList   *dl;

	for (const char *p = list; *p; p++)
		max += (*p == ',' || *p == ' ' || *p == '\t');
	dl = malloc(offsetof(DenyList, nets) + max * sizeof(DenyNet));
	if (dl == NULL)
	{
		GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
		return false;
	}
	dl->n = 0;
	for (char *tok = strtok_r(list, ", \t", &save); tok != NULL;
		 tok = strtok_r(NULL, ", \t", &save))
	{
		if (!parse_net(tok, &dl->nets[dl->n]))
		{
			free(dl);
			pfree(list);
			return false;
		}
		dl->n++;
	}
	pfree(list);
	*extra = dl;
	return true;
}

/*
 * Assign hook of retl.deny_networks: installs the parsed list.
 */
static void
assign_deny_networks(const char *newval, void *extra)
{
	deny_list = (DenyList *) extra;
}

/*
 * Defines the guard GUCs; only superusers may change them.
 */
void
retl_urlpolicy_define_gucs(void)
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
	DefineCustomStringVariable("retl.deny_networks",
							   "Networks that retl may not send data to (comma-separated, CIDR notation).",
							   "Checked as retl.deny_private_networks is: address literals in the URL, resolved addresses, kept-alive connections.",
							   &retl_deny_networks, "",
							   PGC_SUSET, 0, check_deny_networks,
							   assign_deny_networks, NULL);
}
