/*
 * sync_core_main.c - a program built from the sync core and the layers below it only (no libzmq,
 * no libcurl on its link line). If lib/sync ever calls the transport or an HTTP client, this
 * program fails to link and the build breaks: the layering is enforced, not just described.
 */
#include "sync/session.h"

int main(void)
{
    mesh_session_opts o = {0};
    mesh_session *s = NULL;
    /* With no store the constructor refuses; what matters is that everything links. */
    int rc = mesh_session_new(&o, 0, &s);
    mesh_session_free(s);
    return rc == MESH_OK ? 1 : 0;
}
