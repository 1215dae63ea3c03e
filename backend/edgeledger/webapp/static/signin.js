// Sign-In with Ethereum: the wallet's account, a nonce from the app, the EIP-4361 message built here
// and signed with personal_sign, then posted; the app sets an HttpOnly session cookie.
(function () {
  "use strict";
  const W = window.EdgeWallet;
  const button = document.getElementById("connect");
  const out = document.getElementById("status");

  const siweMessage = (c) => [
    `${c.domain} wants you to sign in with your Ethereum account:`,
    c.address,
    "",
    c.statement,
    "",
    `URI: ${c.uri}`,
    `Version: ${c.version}`,
    `Chain ID: ${c.chain_id}`,
    `Nonce: ${c.nonce}`,
    `Issued At: ${c.issued_at}`,
    `Expiration Time: ${c.expiration_time}`,
  ].join("\n");

  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      W.status(out, "progress", W.t("js.signin.connecting"));
      const account = await W.connect();
      const challenge = await W.postJSON("/app/signin/nonce", { address: account });
      const walletChain = await W.chainId();
      if (walletChain !== challenge.chain_id) {
        throw new W.WalletError("wrong_chain", W.t("js.error.wrong_chain", { want: challenge.chain_id, have: walletChain }));
      }
      const message = siweMessage(challenge);
      W.status(out, "progress", W.t("js.signin.sign_in_wallet"));
      const signature = await W.personalSign(challenge.address, message);
      W.status(out, "progress", W.t("js.signin.checking"));
      const answer = await W.postJSON("/app/signin", { message, signature, next: button.dataset.next });
      W.status(out, "ok", W.t("js.signin.done"));
      window.location.assign(answer.next);
    } catch (err) {
      W.status(out, "error", W.errorText(err));
      button.disabled = false;
    }
  });
})();
