// atk serve: refreshes every element with data-live="URL" from that URL about once a second,
// without reloading the page. The server renders the HTML; this only merges it in, node by
// node, so an element that did not change (a Stop button, say) stays the very element under
// the pointer: a click is never lost to a refresh that swapped it for a copy.
"use strict";
(function () {
  // True when two nodes are the same kind of node with the same attributes.
  function sameShell(a, b) {
    if (a.nodeType !== b.nodeType || a.nodeName !== b.nodeName) { return false; }
    if (a.nodeType !== 1) { return true; }
    if (a.attributes.length !== b.attributes.length) { return false; }
    for (var i = 0; i < b.attributes.length; i++) {
      var attr = b.attributes[i];
      if (a.getAttribute(attr.name) !== attr.value) { return false; }
    }
    return true;
  }
  // Makes the children of `live` those of `next`, replacing only what differs.
  function merge(live, next) {
    var have = live.childNodes, want = next.childNodes;
    if (have.length !== want.length) {
      live.replaceChildren(document.importNode(next, true));
      return;
    }
    for (var i = 0; i < want.length; i++) {
      var a = have[i], b = want[i];
      if (!sameShell(a, b)) {
        live.replaceChild(document.importNode(b, true), a);
      } else if (a.nodeType === 1) {
        merge(a, b);
      } else if (a.nodeValue !== b.nodeValue) {
        a.nodeValue = b.nodeValue;
      }
    }
  }
  var last = new WeakMap();
  function refresh(el) {
    return fetch(el.getAttribute("data-live"), { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null || html === last.get(el)) { return; }
        var parsed = document.createElement("template");
        parsed.innerHTML = html;
        merge(el, parsed.content);
        last.set(el, html);
      })
      .catch(function () {});
  }
  // One round at a time: the next starts a second after the last answer, so a slow server
  // never has answers arriving out of order.
  function tick() {
    var all = Array.prototype.map.call(document.querySelectorAll("[data-live]"), refresh);
    Promise.all(all).then(function () { setTimeout(tick, 1000); });
  }
  setTimeout(tick, 1000);
})();
