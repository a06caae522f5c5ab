/* client.h: the `sluice` client commands for people at a terminal:
 *
 *   sluice queue create|list|stats|delete [NAME]
 *   sluice put QUEUE MESSAGE      (MESSAGE "-" reads standard input)
 *   sluice get QUEUE [--wait N] [--invisibility N]
 *   sluice ack QUEUE RECEIPT
 *   sluice events put EVENT | get ID | query [filters] | tail [filters]
 *
 * configured by SLUICE_URL (default http://127.0.0.1:8080), SLUICE_ACCOUNT
 * and SLUICE_KEY, or --url, --account and --key. Every request is signed,
 * with AWS SigV4 by default (it covers the query and the body) or the
 * "Signed" scheme (--scheme signed, SLUICE_AUTH_SCHEME); the key never goes
 * over the wire. Output is for people; --json prints the server's JSON
 * instead. Exit codes: 0 ok, 1 not found or nothing to get (or a stale
 * receipt), 2 usage or a request the server calls bad, 3 authentication or
 * permission, 4 server or network failure. */
#ifndef SL_CLIENT_H
#define SL_CLIENT_H

#include <stdio.h>

/* True for the subcommand names above. */
int sl_client_is_command(const char *cmd);
/* argv[0] is the subcommand. Returns the process exit code. */
int sl_client_main(int argc, char **argv);
void sl_client_usage(FILE *f);

#endif
