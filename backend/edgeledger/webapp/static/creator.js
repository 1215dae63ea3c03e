// The creators' pages: upload and register by drag and drop (upload progress, then the registration
// signed in the wallet), licence and split updates signed in the wallet, and claims (one claimMany sent
// from the wallet, or a signed authorization the platform relays). The server prepares every transaction
// and every typed data; this script only asks the wallet and reports each step.
(function () {
  "use strict";
  const W = window.EdgeWallet;

  // The wallet's account, which must be the signed-in one.
  const account = async (expected) => {
    const address = await W.connect();
    if (expected && address.toLowerCase() !== expected.toLowerCase()) {
      throw new W.WalletError("wrong_account", W.t("creator.js.wrong_account", { address: expected }));
    }
    return address;
  };
  const signedIn = () => {
    const who = document.getElementById("who");
    return who ? who.getAttribute("title") : null;
  };

  // --- upload ------------------------------------------------------------------------------------
  const form = document.getElementById("upload-form");
  if (form) {
    const input = document.getElementById("file");
    const zone = document.getElementById("dropzone");
    const nameOut = document.getElementById("file-name");
    const bar = document.getElementById("progress");
    const out = document.getElementById("upload-status");
    const button = document.getElementById("register");
    let chosen = null;

    const choose = (file) => {
      chosen = file || null;
      nameOut.textContent = chosen ? W.t("creator.js.chosen", { name: chosen.name, size: chosen.size.toLocaleString() }) : "";
    };
    input.addEventListener("change", () => choose(input.files[0]));
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("over");
      if (e.dataTransfer && e.dataTransfer.files.length) choose(e.dataTransfer.files[0]);
    });

    // Integers only: no floats for basis points or ids.
    const intField = (id) => {
      const raw = document.getElementById(id).value.trim();
      if (raw === "") return null;
      if (!/^\d+$/.test(raw)) throw new W.WalletError("validation_error", W.t("creator.js.not_integer", { field: document.querySelector(`label[for=${id}]`).textContent }));
      return parseInt(raw, 10);
    };

    const sendFile = (body) => new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/app/upload");
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", (e) => {
        if (e.lengthComputable) {
          const pct = Math.floor((e.loaded * 100) / e.total);
          bar.value = pct;
          W.status(out, "progress", W.t("creator.js.uploading", { pct }));
        }
      });
      xhr.addEventListener("load", () => {
        let parsed = null;
        try { parsed = JSON.parse(xhr.responseText); } catch (e) { parsed = null; }
        if (xhr.status >= 200 && xhr.status < 300 && parsed) { resolve(parsed); return; }
        const error = (parsed && parsed.error) || {};
        reject(new W.WalletError(error.code || "http_" + xhr.status, error.message || W.t("js.error.server", { status: xhr.status })));
      });
      xhr.addEventListener("error", () => reject(new W.WalletError("network", W.t("creator.js.network"))));
      xhr.send(body);
    });

    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      button.disabled = true;
      try {
        if (!chosen) throw new W.WalletError("file_missing", W.t("creator.js.no_file"));
        const title = document.getElementById("title").value.trim();
        if (!title) throw new W.WalletError("validation_error", W.t("creator.js.no_title"));
        const max = parseInt(form.dataset.maxBytes, 10);
        if (chosen.size > max) throw new W.WalletError("upload_too_large", W.t("error.upload_too_large"));
        const metadata = {
          title,
          description: document.getElementById("description").value,
          territories: document.getElementById("territories").value.split(/[\s,]+/).filter(Boolean),
          royalty_bps: intField("royalty") || 0,
          aigc: document.getElementById("aigc").checked,
        };
        const from = document.getElementById("valid-from").value;
        if (/^\d{4}-\d{2}-\d{2}$/.test(from)) {
          const [y, m, d] = from.split("-").map((n) => parseInt(n, 10));
          metadata.valid_from = Date.UTC(y, m - 1, d) / 1000;  // whole seconds: an integer
        }
        const parent = intField("parent");
        if (parent) metadata.parent_asset_id = parent;
        const address = await account(signedIn());
        const body = new FormData();
        body.append("metadata", JSON.stringify(metadata));
        body.append("file", chosen, chosen.name);
        bar.hidden = false;
        bar.value = 0;
        const registration = await sendFile(body);
        bar.value = 100;
        W.status(out, "progress", W.t("creator.js.sign_registration"));
        const signature = await W.signTypedData(address, registration.typed_data);
        W.status(out, "progress", W.t("creator.js.registering"));
        const landed = await W.postJSON(`/app/registrations/${registration.registration_id}/signature`, { signature });
        W.status(out, "ok", W.t("creator.js.registered", { id: landed.asset_id }));
        window.location.assign(landed.url + "?updated=registered");
      } catch (err) {
        W.status(out, "error", W.errorText(err));
        button.disabled = false;
      }
    });
  }

  // --- licence and split updates ----------------------------------------------------------------
  const terms = W.pageData("terms-data");
  const signedUpdate = (formId, statusId, kind, build) => {
    const f = document.getElementById(formId);
    if (!f || !terms) return;
    const out = document.getElementById(statusId);
    f.addEventListener("submit", async (e) => {
      e.preventDefault();
      const button = f.querySelector("button");
      button.disabled = true;
      try {
        const request = build();
        const address = await account(terms.holder);
        W.status(out, "progress", W.t("creator.js.preparing"));
        const url = `/app/assets/${terms.asset_id}/${kind}`;
        const prepared = await W.postJSON(url, request);
        W.status(out, "progress", W.t("creator.js.sign_update"));
        const signature = await W.signTypedData(address, prepared.typed_data);
        W.status(out, "progress", W.t("creator.js.relaying"));
        await W.postJSON(url, Object.assign({}, request, { signature, deadline: prepared.typed_data.message.deadline }));
        W.status(out, "ok", W.t("creator.js.updated"));
        window.location.assign(`/app/assets/${terms.asset_id}?updated=${kind}`);
      } catch (err) {
        W.status(out, "error", W.errorText(err));
        button.disabled = false;
      }
    });
  };
  signedUpdate("licence-form", "licence-status", "licence", () => {
    const royalty = document.getElementById("lic-royalty").value.trim();
    if (!/^\d+$/.test(royalty)) throw new W.WalletError("validation_error", W.t("creator.js.not_integer", { field: document.querySelector("label[for=lic-royalty]").textContent }));
    return {
      territories: document.getElementById("lic-territories").value.split(/[\s,]+/).filter(Boolean),
      valid_from: terms.licence.valid_from,
      valid_until: terms.licence.valid_until,
      royalty_bps: parseInt(royalty, 10),
      terms_cid: terms.licence.terms_cid,
    };
  });
  signedUpdate("split-form", "split-status", "split", () => {
    const lines = document.getElementById("split-lines").value.split("\n").map((l) => l.trim()).filter(Boolean);
    return {
      split: lines.map((line) => {
        const [recipient, bps] = line.split(/[\s,]+/);
        if (!/^0x[0-9a-fA-F]{40}$/.test(recipient || "") || !/^\d+$/.test(bps || "")) {
          throw new W.WalletError("invalid_split", W.t("creator.js.bad_split_line", { line }));
        }
        return { recipient, bps: parseInt(bps, 10) };
      }),
    };
  });

  // --- claims -------------------------------------------------------------------------------------
  const claimOut = document.getElementById("claim-status");
  const claimButtons = ["claim-wallet", "claim-relay"].map((id) => document.getElementById(id)).filter(Boolean);
  const claiming = (run) => async () => {
    claimButtons.forEach((b) => { b.disabled = true; });
    try {
      const claims = await run();
      window.location.assign(`/app/earnings?claimed=${claims}`);
    } catch (err) {
      W.status(claimOut, "error", W.errorText(err));
      claimButtons.forEach((b) => { b.disabled = false; });
    }
  };
  const walletButton = document.getElementById("claim-wallet");
  if (walletButton) {
    walletButton.addEventListener("click", claiming(async () => {
      const address = await account(signedIn());
      W.status(claimOut, "progress", W.t("creator.js.preparing"));
      const tx = await W.postJSON("/app/claims/prepare", {});
      await W.sendPrepared(address, tx, (kind, text) => W.status(claimOut, kind === "ok" ? "ok" : "progress", text));
      return tx.claims;
    }));
  }
  const relayButton = document.getElementById("claim-relay");
  if (relayButton) {
    relayButton.addEventListener("click", claiming(async () => {
      const address = await account(signedIn());
      W.status(claimOut, "progress", W.t("creator.js.preparing"));
      const auth = await W.postJSON("/app/claims/authorization", {});
      W.status(claimOut, "progress", W.t("creator.js.sign_authorization"));
      const signature = await W.signTypedData(address, auth.typed_data);
      W.status(claimOut, "progress", W.t("creator.js.relaying"));
      const result = await W.postJSON("/app/claims/relay", {
        claims: auth.claims, deadline: auth.typed_data.message.deadline, signature,
      });
      return result.claims;
    }));
  }
})();
