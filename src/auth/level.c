/* level.c: permission levels, the letters "rpuagcd" of API.md.
 *
 * A levels string is a set written as letters in any order. Unknown letters,
 * repeated letters and the empty string are refused: a set that grants
 * nothing, or names a letter twice, is more likely a mistake than an intent,
 * and refusing it keeps one set from having many spellings. Letters are
 * lowercase only, as API.md writes them. */
#include "auth_int.h"

static const char letters[] = "rpuagcd";

int sl_auth_level_bit(char letter) {
    for (int i = 0; letters[i]; i++)
        if (letters[i] == letter) return 1 << i;
    return -1;
}

int sl_auth_levels_parse(const char *s, size_t n, unsigned *levels) {
    unsigned set = 0;
    if (!s || n == 0 || n > sizeof letters - 1) return SL_EINVAL;
    for (size_t i = 0; i < n; i++) {
        int bit = sl_auth_level_bit(s[i]);
        if (bit < 0 || (set & (unsigned)bit)) return SL_EINVAL;
        set |= (unsigned)bit;
    }
    *levels = set;
    return SL_OK;
}

/* Writes the set in the canonical order "rpuagcd". */
size_t sl_auth_levels_format(unsigned levels, char out[8]) {
    size_t n = 0;
    for (int i = 0; letters[i]; i++)
        if (levels & (1u << i)) out[n++] = letters[i];
    out[n] = '\0';
    return n;
}
