// A plain amqplib application, for Herald's interop tests: it knows nothing of Herald or CloudEvents.
//   node amqplib-client.js send    <amqp-url> <queue> <message-id>   sends one plain JSON message
//   node amqplib-client.js receive <amqp-url> <queue>                prints the next message as JSON
const amqp = require('amqplib');

const [mode, url, queue, messageId] = process.argv.slice(2);
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

async function main() {
  const connection = await amqp.connect(url);
  const channel = await connection.createConfirmChannel();
  try {
    if (mode === 'send') {
      await channel.assertQueue(queue, { durable: true });
      channel.sendToQueue(queue, Buffer.from(JSON.stringify({ orderId: 7, note: 'from node' })), {
        messageId,
        timestamp: Math.floor(Date.now() / 1000),
        contentType: 'application/json',
        correlationId: 'node-corr',
        persistent: true,
        headers: { tenant: 'acme', retries: 3 },
      });
      await channel.waitForConfirms();
    } else if (mode === 'receive') {
      const deadline = Date.now() + 15000;
      let message;
      while (!(message = await channel.get(queue, { noAck: true }))) {
        if (Date.now() > deadline) throw new Error(`no message in ${queue}`);
        await sleep(20);
      }
      process.stdout.write(JSON.stringify({ properties: message.properties, body: JSON.parse(message.content.toString('utf8')) }));
    } else {
      throw new Error(`unknown mode ${mode}`);
    }
  } finally {
    await channel.close();
    await connection.close();
  }
}

main().catch(error => {
  console.error(error);
  process.exit(1);
});
