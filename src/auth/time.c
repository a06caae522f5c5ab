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

static int digits(const char *s, int n, int *v) {
    *v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        *v = *v * 10 + (s[i] - '0');
    }
    return 0;
}

static int leap(int y) {
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int y, int m) {
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : d[m - 1];
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil), so no libc time zone state is involved. */
static int64_t days_from_civil(int y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int *y, int *m, int *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

/* Shared by the ISO and the SigV4 formats: validates the fields and returns
 * milliseconds since the epoch. */
int sl__time_from_fields(int y, int mo, int d, int h, int mi, int s, int ms, int64_t *out) {
    if (mo < 1 || mo > 12 || d < 1 || d > month_days(y, mo) || h > 23 || mi > 59 || s > 59) return -1;
    *out = ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60000 + (int64_t)s * 1000 + ms;
    return 0;
}

int sl_auth_time_parse(const char *s, size_t n, int64_t *ms) {
    int y, mo, d, h, mi, sec, frac = 0;
    if (!s || n < 20 || n > 35) return SL_EINVAL;
    if (digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) || s[7] != '-' || digits(s + 8, 2, &d) ||
        s[10] != 'T' || digits(s + 11, 2, &h) || s[13] != ':' || digits(s + 14, 2, &mi) || s[16] != ':' ||
        digits(s + 17, 2, &sec))
        return SL_EINVAL;
    size_t i = 19;
    if (s[i] == '.') {
        size_t start = ++i;
        int scale = 100;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            frac += (s[i] - '0') * scale;
            scale /= 10;
            i++;
        }
        if (i == start || i - start > 9) return SL_EINVAL;
    }
    int64_t offset = 0;
    if (i + 6 == n && (s[i] == '+' || s[i] == '-')) {
        int oh, om;
        if (digits(s + i + 1, 2, &oh) || s[i + 3] != ':' || digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
            return SL_EINVAL;
        offset = (s[i] == '-' ? -1 : 1) * ((int64_t)oh * 60 + om) * 60000;
    } else if (i != n - 1 || s[i] != 'Z') {
        return SL_EINVAL;
    }
    if (sl__time_from_fields(y, mo, d, h, mi, sec, frac, ms)) return SL_EINVAL;
    *ms -= offset;
    return SL_OK;
}

/* Whole seconds are written without a fraction, others with milliseconds,
 * so what the admin API hands out reads like the request-time examples. */
size_t sl_auth_time_format(int64_t ms, char out[32]) {
    int64_t days = ms >= 0 ? ms / 86400000 : -((-ms + 86399999) / 86400000);
    int64_t rem = ms - days * 86400000;
    int y, mo, d;
    civil_from_days(days, &y, &mo, &d);
    int h = (int)(rem / 3600000), mi = (int)(rem / 60000 % 60), s = (int)(rem / 1000 % 60),
        f = (int)(rem % 1000);
    if (y < 0 || y > 9999) return 0;
    if (f) return (size_t)snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", y, mo, d, h, mi, s, f);
    return (size_t)snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02dZ", y, mo, d, h, mi, s);
}
