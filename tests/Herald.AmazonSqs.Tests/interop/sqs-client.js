// A plain @aws-sdk/client-sqs application, for Herald's interop tests: it knows nothing of Herald or CloudEvents.
//   node sqs-client.js send    <endpoint> <queue-url> <message-id> [copies]  sends one plain JSON message (copies times, same id)
//   node sqs-client.js receive <endpoint> <queue-url>                         prints the next message as JSON and deletes it
const { SQSClient, SendMessageCommand, ReceiveMessageCommand, DeleteMessageCommand } = require('@aws-sdk/client-sqs');

const [mode, endpoint, queueUrl, messageId, copies] = process.argv.slice(2);
const client = new SQSClient({ region: 'us-east-1', endpoint, credentials: { accessKeyId: 'node', secretAccessKey: 'node' } });

async function main() {
  if (mode === 'send') {
    for (let i = 0; i < Number(copies || 1); i++) {
      await client.send(new SendMessageCommand({
        QueueUrl: queueUrl,
        MessageBody: JSON.stringify({ orderId: 7, note: 'from node' }),
        MessageAttributes: {
          'message-id': { DataType: 'String', StringValue: messageId },
          tenant: { DataType: 'String', StringValue: 'acme' },
        },
      }));
    }
  } else if (mode === 'receive') {
    const deadline = Date.now() + 15000;
    for (;;) {
      const result = await client.send(new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 1, WaitTimeSeconds: 1, MessageAttributeNames: ['All'] }));
      const message = (result.Messages || [])[0];
      if (message) {
        await client.send(new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: message.ReceiptHandle }));
        const attributes = {};
        for (const [name, value] of Object.entries(message.MessageAttributes || {})) attributes[name] = value.StringValue;
        process.stdout.write(JSON.stringify({ body: JSON.parse(message.Body), attributes }));
        return;
      }
      if (Date.now() > deadline) throw new Error(`no message in ${queueUrl}`);
    }
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
}

main().catch(error => {
  console.error(error);
  process.exit(1);
});
