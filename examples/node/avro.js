// Tidewater's Avro schemas (../../schemas) in Avro's single-object encoding: the bytes
// C3 01, the schema's CRC-64-AVRO fingerprint (8 bytes, little-endian), the binary datum.
'use strict';
const fs = require('fs');
const path = require('path');
const avro = require('avsc');

const SCHEMAS = path.join(__dirname, '..', '..', 'schemas');

// CRC-64-AVRO (Rabin) of a Parsing Canonical Form, as the Avro specification defines it.
function fingerprint(canonical) {
  const EMPTY = 0xc15d213aa4d7a795n;
  const table = [];
  for (let i = 0n; i < 256n; i++) {
    let fp = i;
    for (let j = 0; j < 8; j++) fp = (fp >> 1n) ^ (EMPTY & -(fp & 1n));
    table.push(fp);
  }
  let fp = EMPTY;
  for (const b of Buffer.from(canonical, 'utf8')) {
    fp = (fp >> 8n) ^ table[Number((fp ^ BigInt(b)) & 0xffn)];
  }
  const out = Buffer.alloc(8);
  out.writeBigUInt64LE(fp);
  return out;
}

// Loads schemas/<name>: encode(value) and decode(buffer) in single-object encoding.
function load(name) {
  const type = avro.Type.forSchema(JSON.parse(fs.readFileSync(path.join(SCHEMAS, name), 'utf8')));
  // avsc's type.schema() is the schema's Parsing Canonical Form.
  const fp = fingerprint(JSON.stringify(type.schema()));
  const header = Buffer.concat([Buffer.from([0xc3, 0x01]), fp]);
  return {
    fingerprint: fp,
    encode: (value) => Buffer.concat([header, type.toBuffer(value)]),
    decode: (buf) => {
      if (buf.length < 10 || buf[0] !== 0xc3 || buf[1] !== 0x01) {
        throw new Error('not an Avro single-object record');
      }
      const found = buf.subarray(2, 10);
      if (!found.equals(fp)) {
        throw new Error(`fingerprint ${found.toString('hex')} is not ${name}'s (${fp.toString('hex')})`);
      }
      return type.fromBuffer(buf.subarray(10));
    },
  };
}

module.exports = { fingerprint, load };
