/*-------------------------------------------------------------------------
 *
 * setup.h
 *	  Claiming queued runs and setting them up (setup.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef RETL_SETUP_H
#define RETL_SETUP_H

#include "postgres.h"

struct RetlRun;

/* Runs claimed in the catalog, not set up yet: the caller's to keep. */
typedef struct RetlClaimQueue
{
	int64		ids[64];
	int			n;
	int			next;
} RetlClaimQueue;

extern struct RetlRun *retl_run_claim(RetlClaimQueue *queue);

#endif							/* RETL_SETUP_H */
