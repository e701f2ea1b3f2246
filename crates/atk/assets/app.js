// atk serve: refreshes every element with data-live="URL" from that URL once a second,
// without reloading the page (the server renders the HTML; this only swaps it in).
"use strict";
(function () {
  function refresh(el) {
    var url = el.getAttribute("data-live");
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html !== null && html !== el.innerHTML) { el.innerHTML = html; }
      })
      .catch(function () {});
  }
  function tick() {
    document.querySelectorAll("[data-live]").forEach(refresh);
  }
  setInterval(tick, 1000);
})();
