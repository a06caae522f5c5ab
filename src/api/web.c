/* web.c: embeds the dashboard's static files (web/, served under /ui/ on
 * the admin port by admin.c) with the assembler's .incbin, as openapi.c
 * embeds the OpenAPI documents: the files stay plain HTML, JS and CSS that
 * a browser and an editor understand, and the binary carries them, so the
 * dashboard needs no file on disk and no network. The Makefile makes web.o
 * depend on web/. */
#include <stddef.h>
#include <string.h>

#include "api.h"

#define EMBED(sym, path)                                                                                     \
    __asm__(".pushsection .rodata\n"                                                                         \
            ".type " #sym ", @object\n"                                                                      \
            ".balign 16\n" #sym ":\n"                                                                        \
            ".incbin \"" path "\"\n" #sym "_end:\n"                                                          \
            ".size " #sym ", . - " #sym "\n"                                                                 \
            ".type " #sym "_len, @object\n"                                                                  \
            ".balign 8\n" #sym "_len:\n"                                                                     \
            ".quad " #sym "_end - " #sym "\n"                                                                \
            ".size " #sym "_len, 8\n"                                                                        \
            ".popsection\n");                                                                                \
    extern const unsigned char sym[];                                                                        \
    extern const size_t sym##_len

EMBED(web_index_html, "web/index.html");
EMBED(web_app_js, "web/app.js");
EMBED(web_style_css, "web/style.css");

static const struct {
    const char *name, *type;
    const unsigned char *data;
    const size_t *len;
} files[] = {
    {"index.html", "text/html; charset=utf-8", web_index_html, &web_index_html_len},
    {"app.js", "text/javascript; charset=utf-8", web_app_js, &web_app_js_len},
    {"style.css", "text/css; charset=utf-8", web_style_css, &web_style_css_len},
};

int sl_web_file(const char *name, const char **type, const void **data, size_t *len) {
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        if (strcmp(files[i].name, name) != 0) continue;
        *type = files[i].type;
        *data = files[i].data;
        *len = *files[i].len;
        return 0;
    }
    return -1;
}
