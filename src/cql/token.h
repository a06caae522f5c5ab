/* token.h: Cassandra's Murmur3Partitioner tokens, for token-aware routing.
 *
 * Cassandra hashes the serialized partition key with its own port of
 * MurmurHash3 x64_128 (seed 0) and keeps the first 64 bits. The port reads
 * the 1 to 15 tail bytes as signed Java bytes, so tail bytes >= 0x80 are
 * sign-extended before they are shifted into place; for such keys the result
 * differs from the reference MurmurHash3. Long.MIN_VALUE is reserved as the
 * partitioner's minimum token and is mapped to Long.MAX_VALUE. */
#ifndef SL_CQL_TOKEN_H
#define SL_CQL_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"

/* The token of an already serialized partition key. */
int64_t sl_cql_token(const void *key, size_t len);

/* Serializes a composite partition key (more than one component): for each
 * component a 2-byte big-endian length, its bytes and one 0x00 byte. A key
 * with a single component is its bytes as they are and needs no call.
 * Returns the size needed, which is larger than cap when out was too small,
 * or SL_EINVAL (as a negative long) when a component is over 65535 bytes or
 * null. */
long sl_cql_token_composite(const sl_cql_bytes *parts, size_t n, uint8_t *out, size_t cap);

#endif
