// sluice console: live updates without a reload. The server sends a "change" event over SSE
// when something this page shows may have changed; the page is fetched again and its <main>
// swapped in, keeping open <details> open. Without JavaScript every page still reads fine.
(function () {
  "use strict";
  var topics = (document.body.getAttribute("data-topics") || "").split(" ").filter(Boolean);
  if (!topics.length || !window.EventSource) return;
  var dot = document.getElementById("live-dot");
  // since: what the server had announced when it rendered this page, so a change made while
  // the page loaded is announced at once.
  var url = "/live?" + topics.map(function (t) { return "topic=" + encodeURIComponent(t); }).join("&") +
    "&since=" + encodeURIComponent(document.body.getAttribute("data-seq") || "0");
  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.href, { headers: { "X-Live": "1" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("live"), cur = document.getElementById("live");
        if (!fresh || !cur) return;
        var open = {};
        cur.querySelectorAll("details[open][id]").forEach(function (d) { open[d.id] = true; });
        var focused = document.activeElement && document.activeElement.closest && document.activeElement.closest("form");
        if (focused) return; // do not pull a form from under the user's cursor
        cur.innerHTML = fresh.innerHTML;
        cur.querySelectorAll("details[id]").forEach(function (d) { if (open[d.id]) d.open = true; });
        document.title = doc.title;
      })
      .catch(function () {})
      .then(function () { busy = false; if (again) { again = false; refresh(); } });
  }
  var es = new EventSource(url);
  es.addEventListener("open", function () { if (dot) dot.classList.add("on"); });
  es.addEventListener("error", function () { if (dot) dot.classList.remove("on"); });
  es.addEventListener("change", refresh);
})();
