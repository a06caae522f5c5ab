// sqs_smoke: the AWS SDK for Go v2 against Sluice (tests/api/test_sqs_go.py
// runs it). Creates a queue, sends a message with attributes, receives it
// with a long poll and deletes it; the SDK checks the MD5 digests of what
// it sends and receives. Prints one JSON line of what it saw.
//
//	go run . <endpoint> <account> <key> <queue name>
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

func main() {
	endpoint, account, key, name := os.Args[1], os.Args[2], os.Args[3], os.Args[4]
	ctx := context.Background()
	c := sqs.New(sqs.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider(account, key, ""),
	})
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
		os.Exit(1)
	}
	q, err := c.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name)})
	if err != nil {
		fail("CreateQueue", err)
	}
	sent, err := c.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl:    q.QueueUrl,
		MessageBody: aws.String("from go ☂"),
		MessageAttributes: map[string]types.MessageAttributeValue{
			"lang": {DataType: aws.String("String"), StringValue: aws.String("go")},
			"raw":  {DataType: aws.String("Binary"), BinaryValue: []byte{0, 1, 2, 255}},
		},
	})
	if err != nil {
		fail("SendMessage", err)
	}
	got, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl:              q.QueueUrl,
		WaitTimeSeconds:       5,
		MessageAttributeNames: []string{"All"},
	})
	if err != nil {
		fail("ReceiveMessage", err)
	}
	out := map[string]any{"sent": *sent.MessageId, "received": len(got.Messages)}
	if len(got.Messages) == 1 {
		m := got.Messages[0]
		out["id"] = *m.MessageId
		out["body"] = *m.Body
		out["lang"] = *m.MessageAttributes["lang"].StringValue
		out["raw"] = m.MessageAttributes["raw"].BinaryValue
		if _, err := c.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: q.QueueUrl, ReceiptHandle: m.ReceiptHandle}); err != nil {
			fail("DeleteMessage", err)
		}
	}
	_, err = c.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name + "-missing")})
	var missing *types.QueueDoesNotExist
	out["missing_is_QueueDoesNotExist"] = err != nil && errors.As(err, &missing)
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}
