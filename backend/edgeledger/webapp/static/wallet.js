// EIP-1193 helpers of the EdgeLedger web app (window.EdgeWallet). Only window.ethereum.request is used:
// no web3 library; transactions arrive from the server ready-made ({to, data}) and are only sent here.
// Every step reports visible progress or a readable error through status(element, kind, text).
(function () {
  "use strict";

  const messages = (() => {
    const el = document.getElementById("app-messages");
    try { return el ? JSON.parse(el.textContent) : {}; } catch (e) { return {}; }
  })();

  // A message of the page's language; {name} placeholders filled from values.
  const t = (key, values) => {
    let text = Object.prototype.hasOwnProperty.call(messages, key) ? messages[key] : key;
    for (const [name, value] of Object.entries(values || {})) text = text.split("{" + name + "}").join(String(value));
    return text;
  };

  const status = (el, kind, text) => {
    if (!el) return;
    el.dataset.kind = kind;
    el.textContent = text;
  };

  class WalletError extends Error {
    constructor(code, message) { super(message); this.code = code; }
  }

  // A readable sentence for any failure: the server's error code in this language when the catalog has
  // it, a wallet refusal (EIP-1193 code 4001), else the message itself. Never a stack trace.
  const errorText = (err) => {
    if (!err) return t("js.error.unknown");
    if (err.code === 4001) return t("js.error.rejected");
    if (typeof err.code === "string" && Object.prototype.hasOwnProperty.call(messages, "error." + err.code)) {
      return t("error." + err.code);
    }
    return String(err.message || err);
  };

  const provider = () => {
    if (!window.ethereum || typeof window.ethereum.request !== "function") {
      throw new WalletError("no_wallet", t("js.error.no_wallet"));
    }
    return window.ethereum;
  };

  const request = (method, params) => provider().request(params === undefined ? { method } : { method, params });

  const connect = async () => {
    const accounts = await request("eth_requestAccounts");
    if (!accounts || !accounts.length) throw new WalletError("no_account", t("js.error.no_account"));
    return accounts[0];
  };

  const chainId = async () => parseInt(await request("eth_chainId"), 16);

  const utf8Hex = (text) => "0x" + Array.from(new TextEncoder().encode(text), (b) => b.toString(16).padStart(2, "0")).join("");

  const personalSign = (address, text) => request("personal_sign", [utf8Hex(text), address]);

  const signTypedData = (address, typedData) => request("eth_signTypedData_v4", [address, JSON.stringify(typedData)]);

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // Waits for the receipt of hash (polling eth_getTransactionReceipt); throws if the transaction reverted.
  const waitReceipt = async (hash, timeoutMs) => {
    const until = Date.now() + (timeoutMs || 120000);
    while (Date.now() < until) {
      const receipt = await request("eth_getTransactionReceipt", [hash]);
      if (receipt) {
        if (receipt.status !== "0x1" && receipt.status !== 1) throw new WalletError("reverted", t("js.error.reverted"));
        return receipt;
      }
      await sleep(700);
    }
    throw new WalletError("timeout", t("js.error.timeout"));
  };

  // Sends a prepared transaction {to, data, value?} from `from`, reports progress, returns the receipt.
  const sendPrepared = async (from, tx, onProgress) => {
    const progress = onProgress || (() => {});
    progress("wallet", t("js.tx.confirm_in_wallet"));
    const params = { from, to: tx.to, data: tx.data };
    if (tx.value) params.value = tx.value;
    const hash = await request("eth_sendTransaction", [params]);
    progress("pending", t("js.tx.pending", { hash: hash.slice(0, 10) + "…" }));
    const receipt = await waitReceipt(hash);
    progress("ok", t("js.tx.mined", { block: parseInt(receipt.blockNumber, 16) }));
    return receipt;
  };

  const call = (tx) => request("eth_call", [{ to: tx.to, data: tx.data }, "latest"]);

  // POST JSON to this app; answers the parsed body, or throws WalletError(code, message) from the
  // app's error body {"error": {"code", "message"}}.
  const postJSON = async (url, body) => {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(body || {}),
    });
    let parsed = null;
    try { parsed = await response.json(); } catch (e) { parsed = null; }
    if (!response.ok) {
      const error = (parsed && parsed.error) || {};
      throw new WalletError(error.code || "http_" + response.status, error.message || t("js.error.server", { status: response.status }));
    }
    return parsed;
  };

  // The JSON of a <script type="application/json" id=...> data block of the page.
  const pageData = (id) => {
    const el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  };

  window.EdgeWallet = {
    t, status, errorText, WalletError, request, connect, chainId, personalSign, signTypedData,
    sendPrepared, waitReceipt, call, postJSON, pageData,
  };
})();
