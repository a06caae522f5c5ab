/* limits.h: the limits of the queue API, which the APIs enforce, the engine
 * checks again, and the client commands respect; a header of its own so
 * that client/ needs nothing of queue/. */
#ifndef SL_LIMITS_H
#define SL_LIMITS_H

#define SL_MSG_MAX_DEFAULT (1024 * 1024)
#define SL_BATCH_MAX 100
#define SL_RECEIVE_MAX 32
#define SL_INVIS_MAX 604800 /* 7 days */
#define SL_WAIT_MAX 20
#define SL_ATTRS_MAX 10 /* attributes per message */
#define SL_QUEUE_TAGS_MAX 50 /* tags per queue, as in SQS */
#define SL_ATTR_KEY_MAX 128
#define SL_ATTR_VAL_MAX 1024
#define SL_RECEIPT_MAX 128 /* buffer size for a pop receipt */
#define SL_MSGID_LEN 32    /* hex chars of a message id */
#define SL_TAG_MAX 40

#endif
