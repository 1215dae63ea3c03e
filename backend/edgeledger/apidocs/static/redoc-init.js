// Starts ReDoc on the document named by the page (no inline script: the page's CSP forbids it).
window.addEventListener("load", function () {
  var root = document.getElementById("redoc");
  Redoc.init(root.dataset.specUrl, { hideDownloadButton: false }, root);
});
