// Verifies the proof on this page in the browser: the leaf from the record's values with the documented
// encoding (docs/delivery-leaf.md: keccak256(keccak256(abi.encode(values))), static words), the Merkle
// path with sorted-pair hashing (OpenZeppelin MerkleProof), and an eth_call of
// DeliveryLedger.isBatchRoot(batchId, root) straight to the chain's RPC: nothing here trusts the server.
(function () {
  "use strict";

  const hexToBytes = (hex) => {
    const clean = hex.startsWith("0x") ? hex.slice(2) : hex;
    if (clean.length % 2 !== 0 || /[^0-9a-fA-F]/.test(clean)) throw new Error("bad hex " + hex);
    const out = new Uint8Array(clean.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.substr(i * 2, 2), 16);
    return out;
  };
  const bytesToHex = (bytes) => "0x" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  const keccak = (bytes) => new Uint8Array(window.keccak256.arrayBuffer(bytes));
  const concat = (parts) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let offset = 0;
    for (const p of parts) { out.set(p, offset); offset += p.length; }
    return out;
  };

  // One 32-byte ABI word per static value: bytesN left-aligned, uintN big-endian right-aligned.
  const word = (type, value) => {
    const out = new Uint8Array(32);
    if (type.startsWith("bytes")) {
      const raw = hexToBytes(value);
      if (raw.length !== parseInt(type.slice(5), 10)) throw new Error(type + " of wrong length");
      out.set(raw, 0);
      return out;
    }
    let n = BigInt(value);
    const bits = parseInt(type.slice(4), 10);
    if (n < 0n || n >= (1n << BigInt(bits))) throw new Error(type + " out of range");
    for (let i = 31; i >= 0; i--) { out[i] = Number(n & 0xffn); n >>= 8n; }
    return out;
  };

  const leafOf = (types, values) => keccak(keccak(concat(types.map((t, i) => word(t, values[i])))));

  const compare = (a, b) => {
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] - b[i];
    return 0;
  };
  const processProof = (leaf, proof) =>
    proof.reduce((node, sibling) => {
      const s = hexToBytes(sibling);
      return compare(node, s) <= 0 ? keccak(concat([node, s])) : keccak(concat([s, node]));
    }, leaf);

  const selector = (signature) => bytesToHex(keccak(new TextEncoder().encode(signature)).slice(0, 4));

  async function rootAnchored(rpcUrl, contract, batchId, root) {
    const data = selector("isBatchRoot(bytes32,bytes32)") + batchId.slice(2) + root.slice(2);
    const response = await fetch(rpcUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "eth_call", params: [{ to: contract, data }, "latest"] }),
    });
    const body = await response.json();
    if (body.error) throw new Error(body.error.message || "eth_call failed");
    return BigInt(body.result) === 1n;
  }

  const mark = (id, ok, note) => {
    const el = document.getElementById(id);
    el.className = ok ? "pass" : "fail";
    el.dataset.result = ok ? "pass" : "fail";
    if (note) el.title = note;
  };

  async function verify() {
    const overall = document.getElementById("overall");
    overall.className = "badge unknown";
    overall.textContent = "checking…";
    const doc = JSON.parse(document.getElementById("proof-data").textContent);
    const config = document.getElementById("verify-config").dataset;
    let leafOk = false, pathOk = false, chainOk = false;
    try {
      const leaf = leafOf(doc.leaf_types, doc.leaf_values);
      leafOk = bytesToHex(leaf) === doc.leaf.toLowerCase();
      mark("step-leaf", leafOk, bytesToHex(leaf));
      const root = processProof(leaf, doc.proof);
      pathOk = bytesToHex(root) === doc.root.toLowerCase();
      mark("step-path", pathOk, bytesToHex(root));
      chainOk = await rootAnchored(config.rpcUrl, doc.contract || config.contract, doc.batch.batch_id, bytesToHex(root));
      mark("step-chain", chainOk);
    } catch (err) {
      for (const id of ["step-leaf", "step-path", "step-chain"]) {
        const el = document.getElementById(id);
        if (!el.dataset.result) mark(id, false, String(err));
      }
    }
    const ok = leafOk && pathOk && chainOk;
    overall.className = "badge " + (ok ? "ok" : "bad");
    overall.textContent = ok ? "✔ VERIFIED in your browser and on chain" : "✘ NOT VERIFIED";
    overall.dataset.result = ok ? "pass" : "fail";
  }

  document.getElementById("reverify").addEventListener("click", () => {
    for (const id of ["step-leaf", "step-path", "step-chain"]) {
      const el = document.getElementById(id);
      el.className = "pending";
      delete el.dataset.result;
    }
    verify();
  });
  verify();
})();
