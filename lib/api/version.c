/* version.c - anchors the shared library; every layer is linked in whole. */
#include "meshsync.h"

const char *mesh_version(void) { return MESH_VERSION_STRING; }
