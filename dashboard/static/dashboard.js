// Refreshes the dashboard from /dashboard/data.json once per sample
// interval, without reloading the page. The page works without it: it is
// rendered by the server and reloads itself when scripts are off.
(function () {
  "use strict";
  var W = 160, H = 28; // the chart box; dashboard.Points draws the same

  function points(values) {
    if (!values || values.length === 0) return "";
    var lo = 0, hi = 0, i;
    for (i = 0; i < values.length; i++) { lo = Math.min(lo, values[i]); hi = Math.max(hi, values[i]); }
    var out = [];
    for (i = 0; i < values.length; i++) {
      var x = values.length > 1 ? i * W / (values.length - 1) : 0;
      var y = hi > lo ? 1 + (hi - values[i]) / (hi - lo) * (H - 2) : H - 1;
      out.push(x.toFixed(1) + "," + y.toFixed(1));
    }
    return out.join(" ");
  }

  function el(tag, attrs, text) {
    var ns = tag === "svg" || tag === "polyline" ? "http://www.w3.org/2000/svg" : null;
    var e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function row(f) {
    var tr = el("tr", { "data-id": f.id });
    tr.appendChild(el("th", { scope: "row" }, f.label));
    tr.appendChild(el("td", { "class": "value" }, f.text));
    var td = el("td", { "class": "chart" });
    var svg = el("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, "aria-hidden": "true" });
    svg.appendChild(el("polyline", { points: points(f.history) }));
    td.appendChild(svg);
    tr.appendChild(td);
    tr.appendChild(el("td", { "class": "detail" }, f.detail));
    return tr;
  }

  function render(view) {
    var table = document.getElementById("figures");
    var bodies = table.querySelectorAll("tbody");
    for (var i = 0; i < bodies.length; i++) table.removeChild(bodies[i]);
    var body = null;
    view.figures.forEach(function (f) {
      if (!body || body.getAttribute("data-group") !== f.group) {
        body = el("tbody", { "data-group": f.group });
        var head = el("tr", { "class": "group" });
        head.appendChild(el("th", { colspan: "4", scope: "rowgroup" }, f.group));
        body.appendChild(head);
        table.appendChild(body);
      }
      body.appendChild(row(f));
    });
    var t = new Date(view.time);
    var updated = document.getElementById("updated");
    updated.setAttribute("datetime", view.time);
    updated.textContent = t.toLocaleTimeString();
    document.getElementById("mode").textContent = "live";
    document.getElementById("status").className = "";
  }

  function tick() {
    fetch("/dashboard/data.json", { cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(render)
      .catch(function () {
        document.getElementById("mode").textContent = "disconnected, retrying";
        document.getElementById("status").className = "stale";
      });
  }

  var seconds = parseFloat(document.body.getAttribute("data-interval")) || 1;
  tick();
  setInterval(tick, seconds * 1000);
})();
