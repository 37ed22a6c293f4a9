/*-------------------------------------------------------------------------
 *
 * urlpolicy.h
 *	  Where retl may send data (urlpolicy.c): the check of a destination
 *	  URL, used at create time (dest.c) and before every request
 *	  (send/netguard.c), and the address checks that curl's callbacks use.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RETL_URLPOLICY_H
#define RETL_URLPOLICY_H

#include "postgres.h"

#include <sys/socket.h>

extern void retl_urlpolicy_check(const char *url);
extern bool retl_urlpolicy_active(void);
extern const char *retl_urlpolicy_address_denied(const struct sockaddr *sa);
extern const char *retl_urlpolicy_text_denied(const char *text);
extern void retl_urlpolicy_define_gucs(void);

#endif							/* RETL_URLPOLICY_H */
