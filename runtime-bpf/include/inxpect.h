/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * inxpect region markers for XDP/BPF programs.
 *
 *     INXPECT_START(parse);
 *     ...code to profile...
 *     INXPECT_END(parse);
 *
 * Each marker is a `goto +0` carrying a local symbol named
 * `__inxpect_start_<name>_<n>` or `__inxpect_end_<name>_<n>`. An object that is
 * never rewritten pays nothing: the verifier removes `goto +0` before the JIT
 * runs. `inxpect-instrument --sections` finds the symbols and puts the probe
 * sequences there. The `goto +0` (rather than a bare label) keeps `-g` builds
 * loadable: a label alone would share its line_info with the next instruction.
 *
 * <name> must be a C identifier; `%=` makes every expansion's symbol unique so
 * the same region may be marked in several places (e.g. one END per exit).
 */
#ifndef __INXPECT_H
#define __INXPECT_H

#define __INXPECT_STR(x) #x

#if defined(__clang__)
#define __INXPECT_MARK(kind, name) \
	asm volatile("__inxpect_" kind "_" __INXPECT_STR(name) "_%=: goto +0" ::: "memory")
#else
/* GNU as for BPF: plain `ja 0` is accepted by every binutils that targets BPF. */
#define __INXPECT_MARK(kind, name) \
	asm volatile("__inxpect_" kind "_" __INXPECT_STR(name) "_%=: ja 0" ::: "memory")
#endif

#define INXPECT_START(name) __INXPECT_MARK("start", name)
#define INXPECT_END(name) __INXPECT_MARK("end", name)

/* Aliases matching the InXpect prototype's macro names. */
#define START_TRACE(name) INXPECT_START(name)
#define END_TRACE(name) INXPECT_END(name)

#endif /* __INXPECT_H */
