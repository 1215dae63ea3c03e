// Writes tests/backend/js/vectors.json: delivery-record Merkle test vectors computed by the reference
// implementation, @openzeppelin/merkle-tree's StandardMerkleTree (docs/delivery-leaf.md).
//
//   node tests/backend/js/make_vectors.mjs      (from the project root; rewrites vectors.json)
//
// tests/backend/test_merkle.py checks that edgeledger.ledger.merkle reproduces every field.
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { StandardMerkleTree } from '@openzeppelin/merkle-tree';

const require = createRequire(import.meta.url);
const OZ_VERSION = require('@openzeppelin/merkle-tree/package.json').version;

const TYPES = ['bytes32', 'bytes32', 'uint64', 'bytes16', 'bytes2', 'uint256', 'bytes32', 'uint64', 'uint16', 'uint8', 'bytes32'];

// ASCII right-padded with zero bytes to `size` bytes, as 0x-hex (edgeLocation, country).
const ascii = (text, size) => '0x' + Buffer.from(text, 'ascii').toString('hex').padEnd(2 * size, '0');
const ZERO32 = '0x' + '00'.repeat(32);
const ONES32 = '0x' + 'ff'.repeat(32);

// keccak256 of the strings in the comments (see docs/delivery-leaf.md for what each field hashes).
const SOURCE_CLOUDFRONT = '0x5cdde12d96790aacb72e8fe69341904b0e72da4a695a00b71db59a47c43b4d86'; // "edgeledger:source:cloudfront-acct-1"
const SOURCE_NODE = '0xdc8d0b1359894990862ddd1c12fd029b61c169e680adf8fc2262050129a65bb1'; // "edgeledger:source:node-fra-01"
const REQ_CLOUDFRONT = '0x85c9f7d6f739b767499ae3bf7d6b56f195f29e9445850dd6c711b934050bf5e4'; // x-edge-request-id "XZ4x7ViPOSl3ZkUe6K3z6JcV-2K3D7pWgq1p5E8gBdvuPp6w6HbmYA=="
const REQ_CLOUDFLARE = '0x99cd6bb5c529a0932a1e9869dd9ea397a077f9fc1237a0222a97a6e3c7883bf8'; // RayID "8a1b2c3d4e5f6a7b-FRA"
const REQ = [
  '0xac28d0b8f84cd055c6cf437139a94bac208c71e67d631b4ed243f4ead5c28086', // "req-0001"
  '0x976b27c27f3659549f38e8fe66ec3c06301371f480d1ca706b96fc882ac287b5', // "req-0002"
  '0xae9e422ca2cd73d8a5ec10e44c64949d32d48e36153a9e09bb388417ed72c86e', // "req-0003"
  '0xead2f4b870d3f7e5ffe49d2618419b3d2121bc2f6061f207be5870c0c0704bfc', // "req-0004"
];
const MERCHANT_MEDIA = '0xa222a0eef97ab62f8a47ab144ee4c482f78a0a10b2f968ba7cd269f997822250'; // "media.example.com"
const MERCHANT_CDN = '0xccebb9ddc054fd703450a8ba77756fcf6af3bd49e518b66cf5e2d4f6acf54e69'; // "cdn.example.org"
const COMMIT = [
  '0xf97b306aae5491cf774f25635d3b4f3c39e358316d99c19e3bf39a2e5e380d0f',
  '0x7878bf438fc4d0a8cfeb2bff051fd74489876f00428e8aecd5c34c3c0e40d0e8',
  '0xdafa22676faccc5a52b6123c4db44312220775b5d88f61b6444e79474df9c5a1',
  '0x861f496e918c3309fc4046420c1372fecbd9b99a3427f1d719f6adcc8c1bdd2c',
  '0x07674b6db1ddf45fe0b299d1d8a2e5a98a7acfe9eadce9add81a862181f6b4bc',
];

// [sourceId, requestId, timestampMs, edgeLocation, country, assetId, merchantId, bytesDelivered, status,
//  cacheResult, clientCommitment]; uints as decimal strings, as in OZ's JSON dump.
const cloudfrontHit = [SOURCE_CLOUDFRONT, REQ_CLOUDFRONT, '1719835200123', ascii('FRA56-P1', 16), ascii('DE', 2), '42', MERCHANT_MEDIA, '1048576', '200', '1', COMMIT[0]];
const cloudflareMiss = [SOURCE_CLOUDFRONT, REQ_CLOUDFLARE, '1719835201999', ascii('FRA', 16), ascii('FR', 2), '7', MERCHANT_CDN, '5242880', '206', '2', COMMIT[1]];
const nodeUnregistered = [SOURCE_NODE, REQ[0], '1719835202000', ascii('fra-01', 16), '0x0000', '0', MERCHANT_MEDIA, '0', '404', '4', COMMIT[2]];
const nodeRefresh = [SOURCE_NODE, REQ[1], '1719835202001', ascii('fra-01', 16), ascii('US', 2), '42', MERCHANT_MEDIA, '1234567890123', '304', '3', COMMIT[3]];
const nodeBypass = [SOURCE_NODE, REQ[2], '1719835202002', ascii('fra-01', 16), ascii('GB', 2), '115792089237316195423570985008687907853269984665640564039457584007913129639935', MERCHANT_CDN, '1', '500', '5', COMMIT[4]];
const allZero = [ZERO32, ZERO32, '0', '0x' + '00'.repeat(16), '0x0000', '0', ZERO32, '0', '0', '0', ZERO32];
const allMax = [ONES32, ONES32, '18446744073709551615', '0x' + 'ff'.repeat(16), '0xffff', '115792089237316195423570985008687907853269984665640564039457584007913129639935', ONES32, '18446744073709551615', '65535', '255', ONES32];
const nodeLast = [SOURCE_NODE, REQ[3], '1719835202003', ascii('fra-01', 16), ascii('DE', 2), '9', MERCHANT_CDN, '65536', '200', '1', COMMIT[0]];

const CASES = {
  single: { values: [cloudfrontHit] },
  pair: { values: [cloudfrontHit, cloudflareMiss] },
  three: { values: [cloudfrontHit, cloudflareMiss, nodeUnregistered] },
  // Odd count, extreme values and a duplicated record (equal leaves keep their input order).
  eightWithDuplicate: {
    values: [nodeRefresh, allZero, cloudflareMiss, allMax, nodeBypass, cloudfrontHit, nodeRefresh, nodeLast],
    multiproofs: [[0, 3, 5], [2], []],
  },
  unsorted: { values: [cloudfrontHit, cloudflareMiss, nodeUnregistered, nodeRefresh, nodeBypass], sortLeaves: false },
};

const cases = {};
for (const [name, { values, sortLeaves = true, multiproofs = [] }] of Object.entries(CASES)) {
  const tree = StandardMerkleTree.of(values, TYPES, { sortLeaves });
  cases[name] = {
    sortLeaves,
    values,
    leafHashes: values.map(v => tree.leafHash(v)),
    root: tree.root,
    proofs: values.map((_, i) => tree.getProof(i)),
    multiproofs: multiproofs.map(indices => ({ indices, ...tree.getMultiProof(indices) })),
    render: tree.render(),
    dump: tree.dump(),
  };
}

const out = {
  generator: `tests/backend/js/make_vectors.mjs with @openzeppelin/merkle-tree ${OZ_VERSION} StandardMerkleTree`,
  leafEncoding: TYPES,
  cases,
};
writeFileSync(new URL('./vectors.json', import.meta.url), JSON.stringify(out, null, 2) + '\n');
console.log(`wrote vectors.json (${Object.keys(cases).length} cases, @openzeppelin/merkle-tree ${OZ_VERSION})`);
