/* retl 0.3 -> 0.4: security and operations defaults, delivery fixes */

\echo Use "ALTER EXTENSION retl UPDATE TO '0.4'" to load this file. \quit

/*
 * Issue 14, item 6: messageIds name row versions.  A diff sync's event id
 * mixes in the fingerprint the destination had before (0 for a key's
 * first content, which keeps the ids of 0.3); an unchanged row sent again
 * keeps its version, stored here.
 */
ALTER TABLE retl.fingerprints ADD COLUMN previous bigint NOT NULL DEFAULT 0;
