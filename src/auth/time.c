/* time.c: the ISO-8601 UTC times of request headers and signed URLs.
 *
 * Accepted: "YYYY-MM-DDTHH:MM:SSZ", optionally with 1 to 9 fractional
 * digits before the Z ("2026-11-21T10:00:00.123Z"), because JavaScript's
 * toISOString() and Java's Instant always write milliseconds, and with an
 * offset "+HH:MM" or "-HH:MM" instead of the Z ("2026-11-21T11:00:00+01:00"),
 * as CassieQ's tools and Java's OffsetDateTime write them. Nothing else: no
 * lowercase t or z, no leap second, no missing fields. The string is signed
 * as sent, so accepting both lets no two different strings share a
 * signature. Fractions beyond milliseconds are truncated. */
#include <stdio.h>

#include "auth_int.h"

/* Shared by the ISO and the SigV4 formats: validates the fields and returns
 * milliseconds since the epoch. */
int sl__time_from_fields(int y, int mo, int d, int h, int mi, int s, int ms, int64_t *out) {
    if (mo < 1 || mo > 12 || d < 1 || d > sl_month_days(y, mo) || h > 23 || mi > 59 || s > 59) return -1;
    *out = ((sl_days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60000 + (int64_t)s * 1000 + ms;
    return 0;
}

int sl_auth_time_parse(const char *s, size_t n, int64_t *ms) {
    int64_t us;
    if (!s || n > 35 || sl_time_parse(s, n, 0, &us, NULL) != 0) return SL_EINVAL;
    *ms = us >= 0 ? us / 1000 : -((-us + 999) / 1000);
    return SL_OK;
}

/* Whole seconds are written without a fraction, others with milliseconds,
 * so what the admin API hands out reads like the request-time examples. */
size_t sl_auth_time_format(int64_t ms, char out[32]) {
    int64_t days = ms >= 0 ? ms / 86400000 : -((-ms + 86399999) / 86400000);
    int64_t rem = ms - days * 86400000;
    int y, mo, d;
    sl_civil_from_days(days, &y, &mo, &d);
    int h = (int)(rem / 3600000), mi = (int)(rem / 60000 % 60), s = (int)(rem / 1000 % 60),
        f = (int)(rem % 1000);
    if (y < 0 || y > 9999) return 0;
    if (f) return (size_t)snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", y, mo, d, h, mi, s, f);
    return (size_t)snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02dZ", y, mo, d, h, mi, s);
}
