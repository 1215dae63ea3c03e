// Merchants' pages of the EdgeLedger web app: the wallet steps only (everything else is a plain form).
// Deposit: the server prepares approve + deposit calldata for the typed amount; the wallet sends both,
// in order, with progress shown; the escrow balance is then read again from the vault (eth_call).
// Challenge: the server prepares challenge(periodId, merchant, reason) calldata; the wallet sends it.
// Amounts are BigInt minor units throughout: no floating point touches money.
(function () {
  "use strict";
  const W = window.EdgeWallet;
  const data = W.pageData("merchant-data") || {};

  // Same text as the server's fmt.amount: grouped whole part, at least two decimals, trailing zeros cut.
  const formatAmount = (minor, decimals, symbol) => {
    const negative = minor < 0n;
    const abs = negative ? -minor : minor;
    const unit = 10n ** BigInt(decimals);
    const whole = (abs / unit).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    let text = (negative ? "-" : "") + whole;
    if (decimals > 0) {
      let digits = (abs % unit).toString().padStart(decimals, "0").replace(/0+$/, "");
      digits = digits.padEnd(Math.min(2, decimals), "0");
      text += "." + digits;
    }
    return symbol ? text + " " + symbol : text;
  };

  // The page's wallet must be the merchant's own, on the app's chain.
  const checkedWallet = async () => {
    const account = await W.connect();
    if (data.address && account.toLowerCase() !== data.address.toLowerCase()) {
      throw new W.WalletError("wallet_not_account", W.t("merchant.js.other_account", { address: data.address }));
    }
    if (data.chain_id) {
      const have = await W.chainId();
      if (have !== data.chain_id) throw new W.WalletError("wrong_chain", W.t("js.error.wrong_chain", { have, want: data.chain_id }));
    }
    return account;
  };

  const depositForm = document.getElementById("deposit-form");
  if (depositForm) {
    const statusEl = document.getElementById("deposit-status");
    const button = document.getElementById("deposit-button");
    const balanceEl = document.getElementById("escrow-balance");
    depositForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      button.disabled = true;
      try {
        const amount = document.getElementById("deposit-amount").value;
        W.status(statusEl, "progress", W.t("merchant.js.preparing"));
        const account = await checkedWallet();
        const prepared = await W.postJSON("/app/merchant/escrow/deposit", { amount });
        const calls = prepared.calls;
        for (let i = 0; i < calls.length; i++) {
          const step = W.t("merchant.js.step." + calls[i].step, { n: i + 1, of: calls.length });
          await W.sendPrepared(account, calls[i], (kind, text) => W.status(statusEl, "progress", step + " " + text));
        }
        W.status(statusEl, "progress", W.t("merchant.js.rereading"));
        const raw = await W.call(prepared.escrow_call);
        const escrow = BigInt(raw);
        balanceEl.textContent = formatAmount(escrow, data.decimals, data.symbol);
        balanceEl.dataset.minor = escrow.toString();
        W.status(statusEl, "ok", W.t("merchant.js.deposited", { amount: prepared.amount_text, balance: balanceEl.textContent }));
        depositForm.reset();
      } catch (err) {
        W.status(statusEl, "error", W.errorText(err));
      } finally {
        button.disabled = false;
      }
    });
  }

  for (const form of document.querySelectorAll("form.challenge-form")) {
    const id = form.dataset.settlement;
    const statusEl = document.getElementById("challenge-" + id + "-status");
    const button = document.getElementById("challenge-" + id + "-submit");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      button.disabled = true;
      try {
        const reason = document.getElementById("challenge-" + id + "-reason").value;
        W.status(statusEl, "progress", W.t("merchant.js.preparing"));
        const account = await checkedWallet();
        const call = await W.postJSON("/app/merchant/settlements/" + id + "/challenge", { reason });
        await W.sendPrepared(account, call, (kind, text) => W.status(statusEl, "progress", text));
        W.status(statusEl, "ok", W.t("merchant.js.challenged"));
      } catch (err) {
        W.status(statusEl, "error", W.errorText(err));
        button.disabled = false;
      }
    });
  }
})();
