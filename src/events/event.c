/* event.c: an event's position, the times of the API, the syntax of ids,
 * types and tags, and the rules of an event's fields. */
#include <stdio.h>
#include <string.h>

#include "events.h"

int sl_ev_pos_cmp(const sl_ev_pos *a, const sl_ev_pos *b) {
    if (a->us != b->us) return a->us < b->us ? -1 : 1;
    return strcmp(a->id, b->id);
}

/* Integer milliseconds (s is digits only), within the years allowed. */
static int parse_ms(const char *s, int64_t *us) {
    size_t n = strlen(s);
    int64_t ms = 0;
    if (n > 15) return SL_EINVAL;
    for (size_t i = 0; i < n; i++)
        ms = ms * 10 + (s[i] - '0');
    if (ms > SL_EV_TIME_LAST / 1000) return SL_EINVAL;
    *us = ms * 1000;
    return 0;
}

int sl_ev_time_parse(const char *s, int64_t *us) {
    size_t n = strlen(s);
    int64_t t;
    int nfrac;
    if (n > 0 && strspn(s, "0123456789") == n) return parse_ms(s, us);
    /* The range is checked in UTC: an offset moves a time across a year's
     * end (1970-01-01T00:30:00+01:00 is before the epoch). */
    if (sl_time_parse(s, n, 1, &t, &nfrac) != 0 || nfrac > 6 || t < 0 || t > SL_EV_TIME_LAST)
        return SL_EINVAL;
    *us = t;
    return 0;
}

size_t sl_ev_time_format(int64_t us, char out[SL_EV_TIME_LEN + 1]) {
    if (us < 0 || us > SL_EV_TIME_LAST) return 0;
    int64_t days = us / 86400000000LL, rem = us % 86400000000LL;
    int y, mo, d;
    sl_civil_from_days(days, &y, &mo, &d);
    int64_t s = rem / 1000000;
    snprintf(out, SL_EV_TIME_LEN + 1, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", y, mo, d, (int)(s / 3600),
             (int)(s / 60 % 60), (int)(s % 60), (int)(rem % 1000000));
    return SL_EV_TIME_LEN;
}

/* [A-Za-z0-9_.:-] and, for tags, '=' too, 1..max characters. */
static int token_valid(const char *s, size_t max, int eq) {
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
                 c == '.' || c == ':' || c == '-' || (eq && c == '=');
        if (!ok || n >= max) return 0;
    }
    return n > 0;
}

int sl_ev_id_valid(const char *s) {
    return token_valid(s, SL_EV_ID_MAX, 0);
}

int sl_ev_tag_valid(const char *s) {
    return token_valid(s, SL_EV_TAG_MAX, 1);
}

/* 1..max characters of UTF-8 (the API's JSON decoder has checked the
 * encoding), none of them a control character. */
static int text_valid(const char *s, size_t max) {
    size_t chars = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) return 0;
        if ((*p & 0xc0) != 0x80 && ++chars > max) return 0;
    }
    return chars > 0;
}

const char *sl_event_check(const sl_event *ev) {
    int64_t us;
    if (ev->id[0] && !sl_ev_id_valid(ev->id)) return "id";
    if (!sl_ev_id_valid(ev->type)) return "type";
    if (ev->source && !text_valid(ev->source, SL_EV_STR_MAX)) return "source";
    if (ev->subject && !text_valid(ev->subject, SL_EV_STR_MAX)) return "subject";
    if (ev->time && sl_time_parse(ev->time, strlen(ev->time), 1, &us, NULL) != 0) return "time";
    if (ev->datacontenttype && !text_valid(ev->datacontenttype, SL_EV_DCT_MAX)) return "datacontenttype";
    if (ev->ntags < 0 || ev->ntags > SL_EV_FILTER_MAX) return "tags";
    for (int i = 0; i < ev->ntags; i++) {
        if (!sl_ev_tag_valid(ev->tags[i])) return "tags";
        for (int j = 0; j < i; j++)
            if (strcmp(ev->tags[i], ev->tags[j]) == 0) return "tags";
    }
    return NULL;
}
