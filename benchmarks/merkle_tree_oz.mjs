// OpenZeppelin side of benchmarks/merkle_tree.py: StandardMerkleTree.of(values, types) + getProof(i) for
// every value, timed.
//
//   node benchmarks/merkle_tree_oz.mjs RECORDS_FILE RUNS [SAMPLE_INDEX ...]
//
// RECORDS_FILE holds the records back to back, each the raw field bytes in leaf order (197 bytes:
// bytes32 bytes32 uint64 bytes16 bytes2 uint256 bytes32 uint64 uint16 uint8 bytes32, uints big-endian).
// They become OZ values before any timing starts, in the form OZ's dump and docs use: bytesN as 0x-hex
// strings, uintN as decimal strings (on 5,000 records this was a little faster for OZ than BigInt values or
// Uint8Array bytes). Prints one JSON object: per run the milliseconds of `of` and of all the proofs, the
// root, and the proofs of the sample indices (to compare with ours).
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { StandardMerkleTree } from '@openzeppelin/merkle-tree';

const TYPES = ['bytes32', 'bytes32', 'uint64', 'bytes16', 'bytes2', 'uint256', 'bytes32', 'uint64', 'uint16', 'uint8', 'bytes32'];
const SIZES = [32, 32, 8, 16, 2, 32, 32, 8, 2, 1, 32];
const RECORD = SIZES.reduce((a, b) => a + b, 0);

const [file, runsArg, ...sampleArgs] = process.argv.slice(2);
const runs = Number(runsArg ?? 1);
const sample = sampleArgs.map(Number);

const raw = readFileSync(file);
if (raw.length % RECORD !== 0) throw new Error(`${file}: not a whole number of ${RECORD}-byte records`);
const count = raw.length / RECORD;
const values = new Array(count);
for (let r = 0, offset = 0; r < count; r++) {
  const value = new Array(TYPES.length);
  for (let f = 0; f < TYPES.length; f++) {
    const hex = '0x' + raw.toString('hex', offset, offset + SIZES[f]);
    value[f] = TYPES[f].startsWith('uint') ? BigInt(hex).toString() : hex;
    offset += SIZES[f];
  }
  values[r] = value;
}

const result = { leaves: count, runs: [], root: null, sampleProofs: {} };
for (let run = 0; run < runs; run++) {
  const t0 = performance.now();
  const tree = StandardMerkleTree.of(values, TYPES);
  const t1 = performance.now();
  const proofs = new Array(count);
  for (let i = 0; i < count; i++) proofs[i] = tree.getProof(i);
  const t2 = performance.now();
  result.runs.push({ of_ms: t1 - t0, proofs_ms: t2 - t1 });
  result.root = tree.root;
  for (const i of sample) result.sampleProofs[i] = proofs[i];
}
process.stdout.write(JSON.stringify(result));
