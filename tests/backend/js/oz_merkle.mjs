// Reference side of tests/backend/test_merkle.py: runs @openzeppelin/merkle-tree's StandardMerkleTree.
//
// stdin: a JSON array of requests; stdout: a JSON array of responses, one per request. Values are JSON
// as OZ's dump keeps them (bytesN as 0x-hex, uintN as decimal strings). A request that throws answers
// {"error": message}.
//
//   {"op": "build", "types": [...], "values": [[...], ...], "sortLeaves": true, "multiproofs": [[i, ...]]}
//     -> {root, tree, dump, render, leafHashes (by value index), proofs (getProof(i) for every i),
//         proofsByValue (getProof(value) for every i), multiproofs: [{leaves, proof, proofFlags}]}
//   {"op": "verify", "dump": {...}, "root": "0x..", "checks": [{"value": [...], "proof": [...]}],
//    "multiproofs": [{"leaves": [[...]], "proof": [...], "proofFlags": [...]}]}
//     -> StandardMerkleTree.load(dump) (which validates the whole dump), then for every check
//        {loaded: tree.verify(value, proof), static: StandardMerkleTree.verify(root, types, value, proof)}
//        and for every multiproof {loaded: tree.verifyMultiProof(m), static: StandardMerkleTree.verifyMultiProof}
import { readFileSync } from 'node:fs';
import { StandardMerkleTree } from '@openzeppelin/merkle-tree';

function build({ types, values, sortLeaves = true, multiproofs = [] }) {
  const tree = StandardMerkleTree.of(values, types, { sortLeaves });
  const dump = tree.dump();
  return {
    root: tree.root,
    tree: dump.tree,
    dump,
    render: tree.render(),
    leafHashes: values.map(v => tree.leafHash(v)),
    proofs: values.map((_, i) => tree.getProof(i)),
    proofsByValue: values.map(v => tree.getProof(v)),
    multiproofs: multiproofs.map(indices => tree.getMultiProof(indices)),
  };
}

function verify({ dump, root, checks = [], multiproofs = [] }) {
  const tree = StandardMerkleTree.load(dump);
  const types = dump.leafEncoding;
  return {
    root: tree.root,
    checks: checks.map(({ value, proof }) => ({
      loaded: tree.verify(value, proof),
      static: StandardMerkleTree.verify(root, types, value, proof),
    })),
    multiproofs: multiproofs.map(m => ({
      loaded: tree.verifyMultiProof(m),
      static: StandardMerkleTree.verifyMultiProof(root, types, m),
    })),
  };
}

const ops = { build, verify };
const requests = JSON.parse(readFileSync(0, 'utf8'));
const responses = requests.map(request => {
  try {
    return ops[request.op](request);
  } catch (err) {
    return { error: String(err && err.message ? err.message : err) };
  }
});
process.stdout.write(JSON.stringify(responses));
