// A KafkaJS client that reads LZ4 batches (the scheduler's producer compresses with LZ4 by
// default; KafkaJS has only GZIP built in), with a pure-JavaScript LZ4 codec.
'use strict';
const { Kafka, CompressionTypes, CompressionCodecs, logLevel } = require('kafkajs');
const lz4 = require('lz4js');

CompressionCodecs[CompressionTypes.LZ4] = () => ({
  compress: async (encoder) => Buffer.from(lz4.compress(encoder.buffer)),
  decompress: async (buffer) => Buffer.from(lz4.decompress(buffer)),
});

function kafka(bootstrap, clientId) {
  return new Kafka({ clientId, brokers: bootstrap.split(','), logLevel: logLevel.WARN });
}

module.exports = { kafka };
