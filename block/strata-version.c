/* The library version, exported so embedders can check what they linked. */
#include "strata/strata.h"

#define STR_(x) #x
#define STR(x)  STR_(x)

const char *strata_version(void)
{
    return STR(STRATA_VERSION_MAJOR) "." STR(STRATA_VERSION_MINOR) "." STR(STRATA_VERSION_MICRO);
}
