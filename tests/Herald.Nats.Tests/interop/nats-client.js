// A plain application on the `nats` npm client (2.x), for Herald's interop tests: it knows nothing of Herald.
//   node nats-client.js publish <url> <subject> <msg-id>   JetStream-publishes one plain JSON message twice with the same
//                                                          Nats-Msg-Id, prints both publish acks
//   node nats-client.js pull <url> <stream> <durable>      pulls the next message through a durable pull consumer of its
//                                                          own, acks it, prints its headers and body as JSON
const { connect, headers, AckPolicy } = require('nats');

const [mode, url, target, arg] = process.argv.slice(2);

async function main() {
  const nc = await connect({ servers: url, name: 'herald-interop-node' });
  try {
    if (mode === 'publish') {
      const js = nc.jetstream();
      const acks = [];
      for (let i = 0; i < 2; i++) {
        const h = headers();
        h.set('tenant', 'acme');
        h.set('Content-Type', 'application/json');
        const ack = await js.publish(target, JSON.stringify({ orderId: 7, note: 'from node' }), { msgID: arg, headers: h });
        acks.push({ stream: ack.stream, seq: ack.seq, duplicate: ack.duplicate });
      }
      process.stdout.write(JSON.stringify(acks));
    } else if (mode === 'pull') {
      const jsm = await nc.jetstreamManager();
      await jsm.consumers.add(target, { durable_name: arg, ack_policy: AckPolicy.Explicit });
      const consumer = await nc.jetstream().consumers.get(target, arg);
      const message = await consumer.next({ expires: 10000 });
      if (!message) throw new Error(`no message in ${target}`);
      const hdrs = {};
      for (const key of message.headers ? message.headers.keys() : []) hdrs[key] = message.headers.get(key);
      await message.ackAck();
      process.stdout.write(JSON.stringify({ subject: message.subject, delivered: message.info.redeliveryCount, headers: hdrs, body: message.json() }));
    } else {
      throw new Error(`unknown mode ${mode}`);
    }
  } finally {
    await nc.drain();
  }
}

main().catch(error => {
  console.error(error);
  process.exit(1);
});
