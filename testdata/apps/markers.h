/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Region markers for the test apps. Normally just runtime-bpf's inxpect.h.
 * With -DINXPECT_NO_MARKERS the markers compile to an empty asm with the same
 * "memory" clobber: no instruction, the same compiler barrier. That is the
 * zero-cost test's baseline: it shows the markers' `goto +0`s vanish at
 * verification. It does not show that the barrier is free: with markers
 * compiled to nothing at all, 39 of the 40 objects translate differently
 * (e.g. cms.clang-O2: 249 xlated instructions with markers, 373 without, as
 * the barriers stop clang from unrolling the hash into the row loop).
 */
#ifndef __APPS_MARKERS_H
#define __APPS_MARKERS_H

#ifdef INXPECT_NO_MARKERS
#define INXPECT_START(name) asm volatile("" ::: "memory")
#define INXPECT_END(name) asm volatile("" ::: "memory")
#else
#include <inxpect.h>
#endif

#endif
