// sqs_consumer.mjs: the AWS SDK for JavaScript v3 and sqs-consumer against
// Sluice (tests/api/test_sqs_js.py runs it). Sends N messages in batches of
// 10 through @aws-sdk/client-sqs (whose middleware checks the MD5 digests
// of what it sends and receives), then lets an sqs-consumer Consumer
// process them, a few slowly enough that its heartbeat extends their
// visibility (ChangeMessageVisibility) before it deletes them with the
// receipt handle it received. Prints one JSON line of what happened.
//
//   node sqs_consumer.mjs <endpoint> <account> <key> <queue name> <N>
import {
  CreateQueueCommand,
  GetQueueAttributesCommand,
  SendMessageBatchCommand,
  SQSClient,
} from "@aws-sdk/client-sqs";
import { Consumer } from "sqs-consumer";

const [endpoint, account, key, name, nArg] = process.argv.slice(2);
const N = Number(nArg);
const sqs = new SQSClient({
  endpoint,
  region: "us-east-1",
  credentials: { accessKeyId: account, secretAccessKey: key },
});

// Counts the commands sent and how they ended, by name.
const calls = {};
sqs.middlewareStack.add(
  (next, context) => async (args) => {
    const k = context.commandName;
    try {
      const out = await next(args);
      calls[k] = (calls[k] || 0) + 1;
      return out;
    } catch (e) {
      calls[`${k} failed`] = (calls[`${k} failed`] || 0) + 1;
      throw e;
    }
  },
  { step: "initialize", name: "countCalls" },
);

const { QueueUrl } = await sqs.send(
  new CreateQueueCommand({ QueueName: name, Attributes: { VisibilityTimeout: "10" } }),
);
const sent = new Set();
for (let i = 0; i < N; i += 10) {
  const Entries = [];
  for (let k = i; k < Math.min(N, i + 10); k++)
    Entries.push({
      Id: `m${k}`,
      MessageBody: JSON.stringify({ n: k, text: "héllo ☂" }),
      MessageAttributes: { n: { DataType: "Number", StringValue: String(k) } },
    });
  const r = await sqs.send(new SendMessageBatchCommand({ QueueUrl, Entries }));
  if (r.Failed && r.Failed.length) throw new Error(`send failed: ${JSON.stringify(r.Failed)}`);
  for (const s of r.Successful) sent.add(s.MessageId);
}

const handled = new Map(); // MessageId -> times handled
const errors = [];
let slow = 0;
const done = new Promise((resolve) => {
  const consumer = Consumer.create({
    queueUrl: QueueUrl,
    sqs,
    batchSize: 10,
    waitTimeSeconds: 1,
    visibilityTimeout: 10,
    heartbeatInterval: 1,
    messageAttributeNames: ["All"],
    handleMessage: async (m) => {
      const body = JSON.parse(m.Body);
      if (String(body.n) !== m.MessageAttributes.n.StringValue) errors.push(`attribute of ${body.n}`);
      if (body.n % 100 === 0) {
        slow++;
        await new Promise((r) => setTimeout(r, 2500)); // longer than the heartbeat interval
      }
      handled.set(m.MessageId, (handled.get(m.MessageId) || 0) + 1);
      return m; // acknowledge: delete with this delivery's handle
    },
  });
  for (const ev of ["error", "processing_error", "timeout_error"])
    consumer.on(ev, (e) => errors.push(`${ev}: ${e.message}`));
  const poll = setInterval(async () => {
    if (handled.size < sent.size) return;
    const a = await sqs.send(
      new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ["All"] }),
    );
    const left =
      Number(a.Attributes.ApproximateNumberOfMessages) +
      Number(a.Attributes.ApproximateNumberOfMessagesNotVisible);
    if (left === 0) {
      clearInterval(poll);
      consumer.stop({ abort: false });
      resolve(left);
    }
  }, 200);
  consumer.start();
});
const left = await done;
const twice = [...handled.values()].filter((n) => n > 1).length;
const unknown = [...handled.keys()].filter((id) => !sent.has(id)).length;
console.log(JSON.stringify({ sent: sent.size, handled: handled.size, twice, unknown, slow, left, errors, calls }));
process.exit(0);
