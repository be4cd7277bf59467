/**
 * Codec throughput: decode and encode of 64 KiB STDOUT records, against a
 * plain Buffer copy of the same bytes. Pure CPU, no peers.
 *
 * Allocation-heavy loops depend on the heap's and malloc's state, so every
 * variant runs in a fresh Node process, the variants take turns, each is
 * repeated, and the median is reported.
 */
import { performance } from 'node:perf_hooks';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const MiB = 1024 * 1024;
const RECORD = 65535; // the largest record content: "64 KiB records"
const RECORDS = 256; // 16 MiB of payload per round

/** Cuts `data` into chunks of `size` bytes, like socket reads. */
function chunksOf(data, size) {
  const chunks = [];
  for (let offset = 0; offset < data.length; offset += size) chunks.push(data.subarray(offset, Math.min(offset + size, data.length)));
  return chunks;
}

/** name -> [description, note, baseline name, setup(codec) => { bytes, round }] */
const VARIANTS = {
  'copy-into': ['copy: chunk.copy() of the 64 KiB socket chunks into one buffer', 'baseline for decode: memcpy of the same bytes', null],
  'copy-alloc': ['copy: Buffer.from() of each 64 KiB socket chunk', 'allocate + copy: what keeping the bytes costs', 'copy-into'],
  'decode-chunks': [
    'decode: 64 KiB socket chunks (records cut across chunks)',
    'stream records cut across chunks come as zero-copy pieces',
    'copy-into',
  ],
  'decode-aligned': ['decode: one record per chunk (aligned reads)', 'zero-copy slices', 'copy-into'],
  'decode-whole': ['decode: the whole 16 MiB stream in one push', 'zero-copy slices', 'copy-into'],
  'encode-copy-baseline': ['copy: Buffer.from() of each 65535-byte payload', 'baseline for encode', null],
  'encode-record': [
    'encode: encodeRecord() (header + copy into one buffer)',
    'one buffer per record, for small writes',
    'encode-copy-baseline',
  ],
  'encode-frame': ['encode: frameStream() (header + slice + padding, no copy)', 'for a corked socket / writev', 'encode-copy-baseline'],
};

async function setup(variant) {
  const { RecordDecoder, RecordType, encodeRecord, frameStream } = await import('../dist/src/fastcgi/codec.js');
  const payload = Buffer.alloc(RECORD);
  for (let i = 0; i < RECORD; i++) payload[i] = (i * 31) & 0xff;
  const records = Array.from({ length: RECORDS }, () => encodeRecord(RecordType.STDOUT, 1, payload));
  const stream = Buffer.concat(records);
  const socketChunks = chunksOf(stream, 64 * 1024);
  const target = Buffer.allocUnsafe(stream.length);
  const state = { sink: 0 };
  // The consumer reads the content (first and last byte), so a slice is not free.
  const onRecord = (record) => {
    const content = record.content;
    state.sink += content.length + content[0] + content[content.length - 1];
  };
  const payloadBytes = RECORD * RECORDS;
  const rounds = {
    'copy-into': [
      stream.length,
      () => {
        let offset = 0;
        for (const chunk of socketChunks) offset += chunk.copy(target, offset);
        state.sink += target[offset - 1];
      },
    ],
    'copy-alloc': [
      stream.length,
      () => {
        for (const chunk of socketChunks) state.sink += Buffer.from(chunk)[0];
      },
    ],
    'decode-chunks': [
      stream.length,
      () => {
        const decoder = new RecordDecoder();
        for (const chunk of socketChunks) decoder.push(chunk, onRecord);
        if (decoder.end()) throw new Error('decode failed');
      },
    ],
    'decode-aligned': [
      stream.length,
      () => {
        const decoder = new RecordDecoder();
        for (const record of records) decoder.push(record, onRecord);
      },
    ],
    'decode-whole': [
      stream.length,
      () => {
        new RecordDecoder().push(stream, onRecord);
      },
    ],
    'encode-copy-baseline': [
      payloadBytes,
      () => {
        for (let i = 0; i < RECORDS; i++) state.sink += Buffer.from(payload)[0];
      },
    ],
    'encode-record': [
      payloadBytes,
      () => {
        for (let i = 0; i < RECORDS; i++) state.sink += encodeRecord(RecordType.STDOUT, 1, payload)[9];
      },
    ],
    'encode-frame': [
      payloadBytes,
      () => {
        for (let i = 0; i < RECORDS; i++) state.sink += frameStream(RecordType.STDOUT, 1, payload).length;
      },
    ],
  };
  return { bytes: rounds[variant][0], round: rounds[variant][1], state };
}

/** In a child process: runs one variant for `seconds` after a warm-up, prints MB/s. */
async function measureOne(variant, seconds) {
  const { bytes, round, state } = await setup(variant);
  for (let i = 0; i < 10; i++) round(); // warm-up: let the JIT compile the loop
  let done = 0;
  const start = performance.now();
  const deadline = start + seconds * 1000;
  while (performance.now() < deadline) {
    round();
    done += bytes;
  }
  const mbPerSecond = done / MiB / ((performance.now() - start) / 1000);
  if (state.sink === -1) console.log('unreachable'); // keeps the work observable
  process.stdout.write(JSON.stringify({ variant, mbPerSecond }));
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};

export async function runCodecBench({ seconds = 1.5, repeats = 5 } = {}) {
  const self = fileURLToPath(import.meta.url);
  const samples = Object.fromEntries(Object.keys(VARIANTS).map((variant) => [variant, []]));
  for (let repeat = 0; repeat < repeats; repeat++) {
    for (const variant of Object.keys(VARIANTS)) {
      const child = spawnSync(process.execPath, [self, variant, String(seconds)], { encoding: 'utf8', timeout: 60_000 });
      if (child.status !== 0) throw new Error(`codec variant ${variant} failed: ${child.stderr}`);
      samples[variant].push(JSON.parse(child.stdout).mbPerSecond);
      process.stdout.write('.');
    }
  }
  process.stdout.write('\n');
  const result = Object.fromEntries(Object.entries(samples).map(([variant, values]) => [variant, median(values)]));
  const rows = Object.entries(VARIANTS).map(([variant, [description, note, baseline]]) => ({
    benchmark: description,
    'MB/s (median)': result[variant].toFixed(0),
    'runs (MB/s)': samples[variant].map((value) => value.toFixed(0)).join(' / '),
    'x baseline': (result[variant] / result[baseline ?? variant]).toFixed(2),
    note,
  }));
  const decodeRatio = result['decode-chunks'] / result['copy-into'];
  const allocRatio = result['decode-chunks'] / result['copy-alloc'];
  return {
    title: 'Codec throughput: 64 KiB STDOUT records',
    rows,
    verdicts: [
      `decode of 64 KiB socket chunks (records cut across chunks, the realistic case) / plain copy of the same bytes into one buffer = ${decodeRatio.toFixed(2)}x (target >= 0.5x): ${decodeRatio >= 0.5 ? 'MET' : 'MISSED'}`,
      `the same decode / allocate-and-copy (Buffer.from of each chunk) = ${allocRatio.toFixed(2)}x`,
      `decode with records whole in a chunk (zero-copy) / plain copy = ${(result['decode-aligned'] / result['copy-into']).toFixed(0)}x`,
    ],
    notes: [
      `MB/s counts stream bytes for decode and payload bytes for encode (MiB = 1,048,576 bytes); each variant ran ${repeats} times for ${seconds} s, each time in a fresh Node process, taking turns with the others; the median is shown.`,
    ],
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await measureOne(process.argv[2], Number(process.argv[3] ?? 1.5));
}
