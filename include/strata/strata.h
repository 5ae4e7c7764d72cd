/*
 * libstrata public API.  This is the only header an embedder includes;
 * everything it declares starts with strata_ and is exported from
 * libstrata.so through include/strata/libstrata.map.
 */
#ifndef STRATA_STRATA_H
#define STRATA_STRATA_H

#ifdef __cplusplus
extern "C" {
#endif

#define STRATA_VERSION_MAJOR 0
#define STRATA_VERSION_MINOR 1
#define STRATA_VERSION_MICRO 0

/* The library's version as "MAJOR.MINOR.MICRO". */
const char *strata_version(void);

#ifdef __cplusplus
}
#endif

#endif /* STRATA_STRATA_H */
