/* static.h - the web pages (web chat widget, agent desktop, supervisor) served from the web
 * root: fixed directories, strictly validated file names, fixed content types. */
#ifndef OMNICC_STATIC_H
#define OMNICC_STATIC_H

#include "http.h"

extern const struct http_route static_routes[]; /* daemon/static.c, listed by http.c */

/* The directory pages are served from: [http] web_root, else the source tree's web/ for a
 * daemon run from its build tree, else the installed datadir/omnicc/web. */
const char *static_web_root(void);

#endif
