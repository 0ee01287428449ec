// Keeps a page current without a reload: every few seconds the page is fetched again with
// "X-Live: 1", and the server answers with the contents of #live alone.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) { return; }
  var every = Number(live.getAttribute("data-refresh") || "5") * 1000;
  var stamp = document.getElementById("updated");

  function refresh() {
    fetch(window.location.href, {
      headers: { "X-Live": "1" },
      credentials: "same-origin",
      cache: "no-store"
    }).then(function (response) {
      if (response.status === 401) { window.location.reload(); return null; }
      return response.ok ? response.text() : null;
    }).then(function (html) {
      if (html !== null && html !== undefined) {
        live.innerHTML = html;
        if (stamp) { stamp.textContent = new Date().toLocaleTimeString(); }
      }
    }).catch(function () { /* offline for a moment: try again next time */ })
      .then(function () { window.setTimeout(refresh, every); });
  }
  window.setTimeout(refresh, every);
}());
