/*
 * qr.h - QR codes on the terminal (libqrencode), so that a supervisor can add a phone to the
 * team roster by scanning what `meshsync identity` shows.
 */
#ifndef MESH_CLI_QR_H
#define MESH_CLI_QR_H

#include <stdio.h>

/* The text a node's QR code carries: "MESHSYNC:" and the key in uppercase hex (QR's compact
 * alphanumeric mode holds exactly those characters); `meshsync team add` reads it, as it reads
 * "meshsync:key" and the bare key. */
#define QR_KEY_PREFIX "MESHSYNC:"

/*
 * Writes `text` to `f` as a QR code (error correction level M, a two-module quiet zone) drawn
 * with Unicode half blocks, two rows of modules per line of text. Light modules are drawn as
 * blocks, dark ones as blanks, as `qrencode -t UTF8` does: it reads right on the usual terminal
 * with light text on a dark background. Returns 0, or -1 if the text cannot be encoded.
 */
int qr_print(FILE *f, const char *text);

#endif
