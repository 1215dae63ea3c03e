// Reference side of tests/backend/test_proofs.py: loads an EdgeLedger batch export with
// @openzeppelin/merkle-tree and checks every value with the library alone.
//
// argv[2]: path of an "edgeledger-batch-export/v1" document (its "tree" member is a standard-v1 dump).
// stdout: {root, leafCount, manifestRoot, verified, failed: [index, ...], proofs: {index: proof}} where
// verified counts values for which tree.verify(i, tree.getProof(i)) and the static
// StandardMerkleTree.verify(root, leafEncoding, value, proof) both hold; proofs holds getProof(i) for the
// first values (for comparison with the API's proofs). A load error answers {error: message}.
import { readFileSync } from 'node:fs';
import { StandardMerkleTree } from '@openzeppelin/merkle-tree';

const doc = JSON.parse(readFileSync(process.argv[2], 'utf8'));
let out;
try {
  const tree = StandardMerkleTree.load(doc.tree); // validates the whole dump (every node, every value)
  const failed = [];
  const proofs = {};
  let verified = 0;
  for (const [i, value] of tree.entries()) {
    const proof = tree.getProof(i);
    if (i < 50) proofs[i] = proof;
    const ok = tree.verify(i, proof) && StandardMerkleTree.verify(tree.root, doc.tree.leafEncoding, value, proof);
    if (ok) verified += 1;
    else failed.push(i);
  }
  out = { root: tree.root, leafCount: doc.tree.values.length, manifestRoot: doc.batch.manifest.root, verified, failed, proofs };
} catch (err) {
  out = { error: String(err && err.message ? err.message : err) };
}
process.stdout.write(JSON.stringify(out));
