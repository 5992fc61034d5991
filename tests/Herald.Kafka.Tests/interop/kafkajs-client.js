// A plain kafkajs 2.2 client speaking to a Herald topic in the CloudEvents Kafka binding (binary mode), as a service in
// another language would. Usage:
//   node kafkajs-client.js produce <brokers> <topic> <id> <type> <key> <json>
//   node kafkajs-client.js produce-keys <brokers> <topic> <key>...        (one record per key, kafkajs's default partitioner)
//   node kafkajs-client.js consume <brokers> <topic> <group> <count>     (prints one JSON line per record)
const { Kafka, logLevel } = require('kafkajs');

const [command, brokers, topic, ...rest] = process.argv.slice(2);
const kafka = new Kafka({ clientId: 'kafkajs-interop', brokers: brokers.split(','), logLevel: logLevel.NOTHING });

async function produce([id, type, key, json]) {
  const producer = kafka.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  await producer.send({
    topic,
    acks: -1,
    messages: [{
      key,
      value: json,
      headers: {
        ce_specversion: '1.0',
        ce_id: id,
        ce_type: type,
        ce_source: '/kafkajs',
        ce_time: new Date().toISOString(),
        ce_partitionkey: key,
        'content-type': 'application/json',
      },
    }],
  });
  await producer.disconnect();
}

// One record per key in one batch, each placed by kafkajs's default partitioner (the Java client's: murmur2 of the key).
async function produceKeys(keys) {
  const producer = kafka.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  await producer.send({
    topic,
    acks: -1,
    messages: keys.map((key, i) => ({
      key,
      value: JSON.stringify({ n: i }),
      headers: {
        ce_specversion: '1.0',
        ce_id: require('crypto').randomUUID(),
        ce_type: 'node-keyed',
        ce_source: '/kafkajs',
        ce_time: new Date().toISOString(),
        ce_partitionkey: key,
        'content-type': 'application/json',
      },
    })),
  });
  await producer.disconnect();
}

async function consume([group, count]) {
  const wanted = Number(count);
  const consumer = kafka.consumer({ groupId: group, sessionTimeout: 10000, rebalanceTimeout: 10000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let seen = 0;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`saw ${seen} of ${wanted} records in time`)), 25000);
    consumer.run({
      eachMessage: async ({ partition, message }) => {
        const headers = {};
        for (const [name, value] of Object.entries(message.headers || {})) headers[name] = value.toString('utf8');
        console.log(JSON.stringify({ partition, key: message.key && message.key.toString('utf8'), headers, value: message.value.toString('utf8') }));
        if (++seen >= wanted) { clearTimeout(timer); resolve(); }
      },
    }).catch(reject);
  });
  await consumer.disconnect();
}

(command === 'produce' ? produce(rest) : command === 'produce-keys' ? produceKeys(rest) : consume(rest))
  .then(() => process.exit(0))
  .catch((error) => { console.error(error && error.stack || String(error)); process.exit(1); });
