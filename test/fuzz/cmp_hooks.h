/*-------------------------------------------------------------------------
 *
 * cmp_hooks.h
 *	  Routes the string comparisons of the fuzzed retl sources through
 *	  libFuzzer's comparison hooks (test/fuzz/Makefile force-includes this
 *	  file into src/build/mapping.c, jsonout.c, jsontype.c, jsontime.c
 *	  and event.c only).
 *
 * The mapping parser decides by strcmp/strncmp/memcmp/strstr against
 * names ("userId", "properties", "drop", ...).  Under a sanitizer those
 * calls are intercepted and libFuzzer learns the compared strings, which
 * it then writes into inputs; a module loaded into an uninstrumented
 * postgres has no interceptors, so the calls are renamed here to wrappers
 * (retl_fuzz.c) that call the real function and report to libFuzzer.
 * Function-like macros, defined after <string.h>: declarations and
 * function pointers are left alone.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RETL_FUZZ_CMP_HOOKS_H
#define RETL_FUZZ_CMP_HOOKS_H

#include <stddef.h>
#include <string.h>

extern int	retl_fuzz_memcmp(const void *a, const void *b, size_t n);
extern int	retl_fuzz_strcmp(const char *a, const char *b);
extern int	retl_fuzz_strncmp(const char *a, const char *b, size_t n);
extern char *retl_fuzz_strstr(const char *haystack, const char *needle);

#define memcmp(a, b, n) retl_fuzz_memcmp((a), (b), (n))
#define strcmp(a, b) retl_fuzz_strcmp((a), (b))
#define strncmp(a, b, n) retl_fuzz_strncmp((a), (b), (n))
#define strstr(a, b) retl_fuzz_strstr((a), (b))

#endif							/* RETL_FUZZ_CMP_HOOKS_H */
