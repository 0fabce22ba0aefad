/*
 * gateway_core_main.c - a program built from the gateway's sans-IO core (lib/gateway without
 * curl_driver.c) and the layers below it only: no libcurl, no libzmq on its link line. If the
 * core ever calls an HTTP client or a socket, this program fails to link and the build breaks.
 */
#include "gateway/gateway.h"

int main(void)
{
    /* With a bad configuration the constructor refuses; what matters is that everything links
     * (object libraries put every file of the core on the link line). */
    mesh_gw_config cfg = {0};
    mesh_gw *g = NULL;
    int rc = mesh_gw_new(NULL, &cfg, 0, 0, &g);
    mesh_gw_free(g);
    return rc == MESH_EINVAL ? 0 : 1;
}
