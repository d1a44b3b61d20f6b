/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Region markers for the test apps. Normally just runtime-bpf's inxpect.h.
 * With -DINXPECT_NO_MARKERS the markers compile to nothing, which is how the
 * zero-cost test gets its baseline build.
 */
#ifndef __APPS_MARKERS_H
#define __APPS_MARKERS_H

#ifdef INXPECT_NO_MARKERS
#define INXPECT_START(name) do { } while (0)
#define INXPECT_END(name) do { } while (0)
#else
#include <inxpect.h>
#endif

#endif
