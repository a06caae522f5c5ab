/* openapi.c: embeds src/api/openapi.json, the OpenAPI 3 document of the
 * native API, as sl_openapi_json (NUL-terminated) and sl_openapi_json_len,
 * and src/api/openapi-admin.json, the admin API's, likewise.
 *
 * The assembler's .incbin reads the file at build time, so the document stays
 * a plain JSON file that editors and validators understand. The path is
 * relative to the repository root, where make runs the compiler; the
 * Makefile makes openapi.o depend on openapi.json. */
#include <stddef.h>

__asm__(".pushsection .rodata\n"
        ".global sl_openapi_json\n"
        ".type sl_openapi_json, @object\n"
        ".balign 16\n"
        "sl_openapi_json:\n"
        ".incbin \"src/api/openapi.json\"\n"
        "sl_openapi_json_end:\n"
        ".byte 0\n"
        ".size sl_openapi_json, . - sl_openapi_json\n"
        ".global sl_openapi_json_len\n"
        ".type sl_openapi_json_len, @object\n"
        ".balign 8\n"
        "sl_openapi_json_len:\n"
        ".quad sl_openapi_json_end - sl_openapi_json\n"
        ".size sl_openapi_json_len, 8\n"
        ".popsection\n");

/* The admin API's document, served on the admin port. */
__asm__(".pushsection .rodata\n"
        ".global sl_openapi_admin_json\n"
        ".type sl_openapi_admin_json, @object\n"
        ".balign 16\n"
        "sl_openapi_admin_json:\n"
        ".incbin \"src/api/openapi-admin.json\"\n"
        "sl_openapi_admin_json_end:\n"
        ".byte 0\n"
        ".size sl_openapi_admin_json, . - sl_openapi_admin_json\n"
        ".global sl_openapi_admin_json_len\n"
        ".type sl_openapi_admin_json_len, @object\n"
        ".balign 8\n"
        "sl_openapi_admin_json_len:\n"
        ".quad sl_openapi_admin_json_end - sl_openapi_admin_json\n"
        ".size sl_openapi_admin_json_len, 8\n"
        ".popsection\n");
