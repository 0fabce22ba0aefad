/*
 * qr.c - This file implements QR codes on the terminal (see qr.h): the only caller of
 * libqrencode.
 */
#include "qr.h"

#include <qrencode.h>

#define QUIET_ZONE 2

static int dark(const QRcode *q, int x, int y)
{
    if (x < 0 || y < 0 || x >= q->width || y >= q->width) return 0;
    return q->data[y * q->width + x] & 1;
}

int qr_print(FILE *f, const char *text)
{
    QRcode *q = QRcode_encodeString(text, 0, QR_ECLEVEL_M, QR_MODE_8, 1);
    if (q == NULL) return -1;
    /* Each character shows two rows: upper half block, lower half block, full, or blank. */
    static const char *const cell[4] = {"\xe2\x96\x88", "\xe2\x96\x80", "\xe2\x96\x84", " "};
    for (int y = -QUIET_ZONE; y < q->width + QUIET_ZONE; y += 2) {
        for (int x = -QUIET_ZONE; x < q->width + QUIET_ZONE; x++)
            fputs(cell[dark(q, x, y) << 1 | dark(q, x, y + 1)], f);
        fputc('\n', f);
    }
    QRcode_free(q);
    return 0;
}
