/* retl 0.3 -> 0.4: security and operations defaults, delivery fixes */

\echo Use "ALTER EXTENSION retl UPDATE TO '0.4'" to load this file. \quit
