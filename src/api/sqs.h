/* sqs.h: the pure pieces of the SQS front end (api/sqs.c): message
 * attributes and their digests, the characters a message may hold, queue
 * URLs and names. No I/O and no engine: each takes bytes or a JSON value
 * and answers, so that unit tests and the fuzzer reach every rule.
 *
 * Message attributes travel as the JSON protocol writes them:
 * {"name": {"DataType": "String" | "Number" | "Binary" (with an optional
 * ".custom" suffix), "StringValue": "..." | "BinaryValue": "<base64>"}}.
 * Sluice stores them so in a message's attributes, except a plain String,
 * which it stores as the bare string the native API reads and writes (one
 * queue, two APIs). */
#ifndef SL_API_SQS_H
#define SL_API_SQS_H

#include <jansson.h>
#include <stddef.h>

#include "../sluice.h"

#define SL_SQS_ATTRS_MAX 10      /* message attributes per message */
#define SL_SQS_ATTR_NAME_MAX 256 /* bytes of an attribute's name */
#define SL_SQS_TYPE_MAX 256      /* bytes of a DataType */
#define SL_SQS_QUEUE_NAME_MAX 80

/* MD5 of n bytes as 32 lowercase hex digits. */
void sl_sqs_md5_hex(const void *p, size_t n, char out[33]);

/* MD5OfMessageAttributes (and MD5OfMessageSystemAttributes) as AWS
 * computes it over attrs (the shape above, already checked): for each
 * attribute in byte order of names, the name, the DataType, a transport
 * byte (1 string, 2 binary) and the value, each length-prefixed (4 bytes,
 * big-endian) but the transport byte. 0, SL_EINVAL (a value not in that
 * shape), or SL_ENOMEM. An empty object has no digest: the caller leaves
 * it out. */
int sl_sqs_md5_attrs(json_t *attrs, char out[33]);

/* Checks message attributes as SendMessage carries them: at most
 * SL_SQS_ATTRS_MAX; names of 1..256 of [A-Za-z0-9_.-], not starting with
 * "AWS." or "Amazon." (any case), nor with or ending in ".", nor holding
 * ".."; a DataType of String, Number or Binary with an optional
 * ".suffix"; exactly the value that type takes, not empty, a Number's a
 * decimal AWS accepts, a String's made of the characters a body may hold.
 * With system set, only AWSTraceHeader (String) is allowed. Adds their
 * size as AWS counts it against the message size (name, type and value
 * bytes) to *bytes. 0, or SL_EINVAL with a reason in err. */
int sl_sqs_attrs_check(json_t *attrs, int system, size_t *bytes, char *err, size_t cap);

/* Whether a message body (or String attribute) holds only the characters
 * SQS allows: valid UTF-8 of #x9, #xA, #xD, #x20-#xD7FF, #xE000-#xFFFD
 * and #x10000-#x10FFFF. */
int sl_sqs_text_ok(const void *p, size_t n);

/* Standard base64 with padding, strict: the decoded length, or SL_EINVAL.
 * out holds at least n / 4 * 3 bytes. */
long sl_sqs_b64_decode(const char *in, size_t n, unsigned char *out);

/* The account and queue of a queue URL, "scheme://host[:port]/account/
 * queue" or the path alone: 0, or SL_EINVAL when it is not one. */
int sl_sqs_queue_url(const char *url, char account[SL_NAME_MAX + 1], char queue[SL_NAME_MAX + 1]);

/* A queue name SQS accepts on creation: 1..80 of [A-Za-z0-9_-], and a
 * FIFO queue's ".fifo" suffix counted in. */
int sl_sqs_queue_name_ok(const char *name);

/* The query protocol's parameters (form fields or the query string,
 * decoded, in the order sent) as the JSON protocol's request body: "Name"
 * as it is, "AttributeName.1" into the list AttributeNames,
 * "Attribute.1.Name"/".Value" (and MessageAttribute's, whose Value has
 * fields, and Tag's Key/Value) into maps, "SendMessageBatchRequestEntry.1.*"
 * and the like into Entries. The action goes to action. Returns a new
 * object, or NULL with err: with action empty when there is no valid
 * Action (one, of letters and digits), else for a parameter given twice,
 * an index out of 1..100 or with a hole, a name this protocol does not
 * have. */
json_t *sl_sqs_query_decode(const char *const *names, const char *const *values, size_t n, char *action,
                            size_t action_cap, char *err, size_t cap);

/* A result in the JSON protocol's shape as the query protocol's XML:
 * <ActionResponse><ActionResult>...</ActionResult><ResponseMetadata>
 * <RequestId>..., its maps and lists by SQS's member names (Attribute with
 * Name and Value, MessageAttribute, Tag, QueueUrl, Message, the batch
 * ActionResultEntry and BatchResultErrorEntry). malloc'ed, NUL-terminated,
 * *len its length; NULL when out of memory. */
char *sl_sqs_query_answer(const char *action, json_t *result, const char *request_id, size_t *len);
/* The query protocol's ErrorResponse. */
char *sl_sqs_query_error(const char *type, const char *code, const char *message, const char *request_id,
                         size_t *len);

/* Splits an application/x-www-form-urlencoded text s (changed in place)
 * into at most cap names and values, decoded ('+' is a space): their
 * count, or SL_EINVAL (a bad or NUL escape, more than cap pairs). */
long sl_sqs_form_split(char *s, char **names, char **values, size_t cap);

#endif
