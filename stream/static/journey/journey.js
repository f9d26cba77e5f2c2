/* The built-in journey page: reads /api/v1/page/* every few seconds and draws plain
   HTML bars and SVG charts. No library, no network beyond this API. */
(function () {
  "use strict";

  var REFRESH_MS = 5000;
  var RANGES = { "1h": 3600e3, "6h": 6 * 3600e3, "24h": 24 * 3600e3, "7d": 7 * 24 * 3600e3 };
  var STAGES = ["awareness", "consideration", "decision", "purchase", "retention", "advocacy", "lapsed"];
  var RATE_SERIES = [  // a bucket whose denominator is 0 has no point (the API says 0)
    { key: "conversion_rate", over: "sessions", label: "conversion", color: "#059669" },
    { key: "bounce_rate", over: "sessions", label: "bounce", color: "#f97316" },
    { key: "cart_abandonment_rate", over: "carts_created", label: "cart abandonment", color: "#dc2626" },
  ];
  var EVENT_TYPES = { page: "(page view)", screen: "(screen view)", identify: "(identify)", alias: "(alias)" };
  var SVG_NS = "http://www.w3.org/2000/svg";
  var integer = new Intl.NumberFormat("en-US");
  var money = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  var source = new URLSearchParams(location.search).get("source");
  var range = RANGES[location.hash.slice(1)] ? location.hash.slice(1) : "24h";
  var timer = null;

  // --- small helpers ---------------------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    for (var name in attrs || {}) {
      if (name === "text") node.textContent = attrs[name];
      else if (name === "style") node.style.cssText = attrs[name];
      else node.setAttribute(name, attrs[name]);
    }
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }

  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG_NS, tag);
    for (var name in attrs) node.setAttribute(name, attrs[name]);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function stageColor(stage) { return "var(--" + (STAGES.indexOf(stage) >= 0 ? stage : "lapsed") + ")"; }
  function fmtInt(n) { return n === null || n === undefined ? "–" : integer.format(Math.round(Number(n))); }
  function fmtMoney(n) { return n === null || n === undefined ? "–" : money.format(Number(n)); }
  function fmtPct(r) {
    if (r === null || r === undefined) return "–";
    var p = 100 * r;
    return (p >= 10 || p === 0 ? p.toFixed(0) : p.toFixed(1)) + "%";
  }
  function hhmm(date) { return date.toISOString().slice(11, 16); }
  function stageLabel(stage) { return stage === "" ? "new visitor" : stage; }

  function replace(container, nodes) {
    container.replaceChildren.apply(container, nodes);
  }

  function bars(container, rows, opts) {
    var max = Math.max.apply(null, rows.map(function (r) { return r.value; }).concat([1]));
    var nodes = [];
    rows.forEach(function (r) {
      nodes.push(el("div", { class: "name" + (opts.stageNames ? " stage-name" : ""), title: r.name, text: r.name, "data-name": r.name }));
      var fill = el("div", { class: "fill", style: "width:" + (100 * r.value / max).toFixed(1) + "%;" + (r.color ? "background:" + r.color : "") });
      nodes.push(el("div", { class: "track" }, [fill]));
      nodes.push(el("div", { class: "num", text: fmtInt(r.value) }));
    });
    if (!rows.length) nodes.push(el("div", { class: "empty", style: "grid-column:1/-1", text: "nothing yet" }));
    replace(container, nodes);
  }

  // --- panels ------------------------------------------------------------------------------

  function setKpi(id, value, sub) {
    $(id).querySelector(".value").textContent = value;
    if (sub !== undefined) $(id).querySelector(".sub").textContent = sub;
  }

  function renderSummary(s) {
    setKpi("kpi-visitors", fmtInt(s.visitors), fmtInt(s.pageviews) + " pageviews");
    setKpi("kpi-sessions", fmtInt(s.sessions), fmtInt(s.converted_sessions) + " converted");
    setKpi("kpi-active", fmtInt(s.active_sessions));
    setKpi("kpi-orders", fmtInt(s.orders), fmtInt(s.carts) + " carts closed");
    setKpi("kpi-revenue", fmtMoney(s.revenue), "all currencies");
    setKpi("kpi-aov", fmtMoney(s.average_order_value), "revenue / orders");
    setKpi("kpi-conversion", fmtPct(s.conversion_rate));
    setKpi("kpi-bounce", fmtPct(s.bounce_rate));
    setKpi("kpi-abandonment", fmtPct(s.cart_abandonment_rate), fmtInt(s.abandoned_carts) + " of " + fmtInt(s.carts) + " carts left");
  }

  function renderFunnel(f) {
    var top = Math.max(1, f.stages[0] ? f.stages[0].visitors : 1);
    var nodes = ["stage", "", "reached", "step", "now"].map(function (h, i) {
      return el("div", { class: "head" + (i > 1 ? " num" : ""), text: h });
    });
    f.stages.forEach(function (s) {
      var row = { "data-stage": s.stage };
      nodes.push(el("div", Object.assign({ class: "stage" }, row), [
        el("span", { class: "swatch", style: "background:" + stageColor(s.stage) }),
        el("span", { text: s.stage }),
      ]));
      var fill = el("div", { class: "fill", style: "width:" + (100 * s.visitors / top).toFixed(1) + "%;background:" + stageColor(s.stage) });
      nodes.push(el("div", Object.assign({ class: "track", title: fmtInt(s.entered) + " entered in the range" }, row), [fill]));
      nodes.push(el("div", Object.assign({ class: "num count" }, row), [document.createTextNode(fmtInt(s.visitors))]));
      var step = s.conversion === null ? "" : s.conversion >= 0.5 ? " up" : " down";
      nodes.push(el("div", Object.assign({ class: "num conv" }, row), s.conversion === null ? [] : [
        el("span", { class: "chip" + step, text: "→ " + fmtPct(s.conversion) }),
      ]));
      nodes.push(el("div", Object.assign({ class: "num now muted" }, row), [document.createTextNode(fmtInt(s.current))]));
    });
    nodes.push(el("div", { class: "funnel-foot muted small", style: "grid-column:1/-1" }, [
      document.createTextNode("awareness → purchase: "),
      el("strong", { id: "overall-conversion", text: fmtPct(f.overall_conversion) }),
    ]));
    replace($("funnel"), nodes);
    $("now-total").textContent = fmtInt(f.current_total) + " known visitors";
    bars($("now"), f.current.map(function (c) {
      return { name: c.stage, value: c.visitors, color: stageColor(c.stage) };
    }), { stageNames: true });
  }

  function renderFlow(flow) {
    var cells = {};
    var max = 1;
    var froms = [""].concat(flow.stages);
    var tos = flow.stages.slice();
    flow.transitions.forEach(function (t) {
      cells[t.from + ">" + t.to] = t;
      max = Math.max(max, t.transitions);
      if (froms.indexOf(t.from) < 0) froms.push(t.from);
      if (tos.indexOf(t.to) < 0) tos.push(t.to);
    });
    var used = function (stage) {
      return flow.transitions.some(function (t) { return t.from === stage; });
    };
    froms = froms.filter(function (s) { return s !== "lapsed" || used(s); });  // lapsed: only when it moves on
    var head = el("tr", {}, [el("th", { class: "row", text: "from \\ to" })].concat(tos.map(function (s) {
      return el("th", { class: "col", title: s, style: "border-bottom-color:" + stageColor(s), text: s });
    })));
    var rows = froms.map(function (from) {
      return el("tr", {}, [el("th", { class: "row", text: stageLabel(from) })].concat(tos.map(function (to) {
        var t = cells[from + ">" + to];
        if (!t) return el("td", { class: "zero", text: "·" });
        var alpha = 0.15 + 0.75 * Math.sqrt(t.transitions / max);
        return el("td", {
          class: "some", "data-from": from, "data-to": to,
          style: "background:rgba(79,70,229," + alpha.toFixed(2) + ");" + (alpha > 0.6 ? "color:#fff" : ""),
          title: stageLabel(from) + " → " + to + ": " + t.transitions + " transitions, " + t.visitors + " visitors",
          text: fmtInt(t.transitions),
        });
      })));
    });
    replace($("flow"), flow.transitions.length
      ? [el("table", {}, [el("thead", {}, [head]), el("tbody", {}, rows)])]
      : [el("div", { class: "empty", text: "no stage changes in the range" })]);
  }

  // [start, end) index ranges of points in consecutive buckets.
  function runs(points, bucketMs) {
    var out = [];
    var start = 0;
    for (var i = 1; i <= points.length; i++) {
      if (i === points.length || points[i].time - points[i - 1].time > 1.5 * bucketMs) {
        out.push([start, i]);
        start = i;
      }
    }
    return out;
  }

  // Axis maximum: four steps of 1, 2, 2.5 or 5 x 10^k covering `top`.
  function niceMax(top) {
    var raw = Math.max(top, 1e-9) / 4;
    var scale = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 2.5, 5, 10].map(function (m) { return m * scale; }).find(function (v) { return v >= raw; });
    return 4 * step;
  }

  // A time chart at the container's pixel width: x over [from, to), y over [0, yMax];
  // points carry `time` (their bucket's middle); series = [{label, values, color, kind}].
  function timeChart(container, from, to, bucketMs, points, series, yMax, yFormat) {
    var W = Math.max(280, container.clientWidth), H = 220, L = 44, R = 12, T = 10, B = 24;
    var root = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img" });
    var x = function (t) { return L + (W - L - R) * (t - from) / Math.max(1, to - from); };
    var y = function (v) { return T + (H - T - B) * (1 - v / yMax); };
    for (var i = 0; i <= 4; i++) {
      var v = yMax * i / 4;
      root.appendChild(svg("line", { class: "grid-line", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      root.appendChild(svg("text", { class: "axis", x: L - 6, y: y(v) + 4, "text-anchor": "end" }, yFormat(v)));
    }
    for (var k = 0; k <= 4; k++) {
      var t = from + (to - from) * k / 4;
      var anchor = k === 0 ? "start" : k === 4 ? "end" : "middle";
      var label = to - from > 36 * 3600e3 ? new Date(t).toISOString().slice(5, 10) + " " + hhmm(new Date(t)) : hhmm(new Date(t));
      root.appendChild(svg("text", { class: "axis", x: x(t), y: H - 6, "text-anchor": anchor }, label));
    }
    var barWidth = Math.max(3, Math.min(40, 0.7 * (W - L - R) * bucketMs / Math.max(1, to - from)));
    series.forEach(function (s) {
      var known = [], xy = [];  // points with a value, and their [x, y, value]
      points.forEach(function (p, i) {
        if (s.values[i] === null) return;
        known.push(p);
        xy.push([x(p.time), y(s.values[i]), s.values[i]]);
      });
      if (s.kind === "bar") {
        xy.forEach(function (c) {
          var rect = svg("rect", { x: c[0] - barWidth / 2, y: c[1], width: barWidth, height: Math.max(0, H - B - c[1]), rx: 2, fill: s.color });
          rect.appendChild(svg("title", {}, yFormat(c[2])));
          root.appendChild(rect);
        });
        return;
      }
      runs(known, bucketMs).forEach(function (run) {  // no line across buckets without data
        if (run[1] - run[0] < 2) return;
        root.appendChild(svg("polyline", {
          points: xy.slice(run[0], run[1]).map(function (c) { return c[0].toFixed(1) + "," + c[1].toFixed(1); }).join(" "),
          fill: "none", stroke: s.color, "stroke-width": 2, "stroke-linejoin": "round",
        }));
      });
      if (xy.length <= 120) {
        xy.forEach(function (c) {
          var dot = svg("circle", { cx: c[0], cy: c[1], r: 3.5, fill: s.color, class: "point" });
          dot.appendChild(svg("title", {}, s.label + ": " + yFormat(c[2])));
          root.appendChild(dot);
        });
      }
    });
    if (!points.length) {
      root.appendChild(svg("text", { class: "axis", x: (L + W - R) / 2, y: H / 2, "text-anchor": "middle" }, "no completed windows in the range yet"));
    }
    replace(container, [root]);
  }

  function renderRates(r, from, to) {
    var bucketMs = r.bucket === "hour" ? 3600e3 : 60e3;
    var points = r.points.map(function (p) { return Object.assign({ time: Date.parse(p.t) + bucketMs / 2 }, p); });
    $("rates-note").textContent = "per " + r.bucket + ", completed one-minute windows";
    timeChart($("rates"), from, to, bucketMs, points, RATE_SERIES.map(function (s) {
      var values = points.map(function (p) { return p[s.over] > 0 ? p[s.key] : null; });
      return { label: s.label, color: s.color, values: values };
    }), 1, fmtPct);
    var revenue = points.map(function (p) { return p.revenue; });
    var yMax = niceMax(Math.max.apply(null, revenue.concat([4])));
    $("revenue-note").textContent = "per " + r.bucket + " · " + fmtInt(points.reduce(function (a, p) { return a + p.orders; }, 0)) + " orders";
    timeChart($("revenue"), from, to, bucketMs, points, [{ label: "revenue", color: "#34d399", kind: "bar", values: revenue }], yMax, function (v) {
      return v >= 1000 ? (v / 1000).toFixed(v >= 10000 ? 0 : 1) + "k" : fmtInt(v);
    });
  }

  function renderTop(t) {
    bars($("events"), t.events.map(function (e) { return { name: EVENT_TYPES[e.event] || e.event, value: e.events }; }), {});
    var body = $("products").querySelector("tbody");
    var rows = t.products.map(function (p) {
      return el("tr", { "data-product": p.product_id }, [
        el("td", {}, [document.createTextNode(p.name || p.product_id), p.name ? el("span", { class: "pid", text: p.product_id }) : null]),
        el("td", { class: "num", text: fmtInt(p.views) }),
        el("td", { class: "num", text: fmtInt(p.cart_adds) }),
        el("td", { class: "num", text: fmtInt(p.orders) }),
        el("td", { class: "num", text: fmtInt(p.units) }),
        el("td", { class: "num", text: fmtMoney(p.revenue) }),
      ]);
    });
    if (!rows.length) rows.push(el("tr", {}, [el("td", { colspan: 6, class: "empty", text: "no product events in the range" })]));
    replace(body, rows);
  }

  function pill(stage) {
    return el("span", { class: "pill", style: "background:" + stageColor(stage), text: stageLabel(stage) });
  }

  function renderRecent(r) {
    var items = r.changes.map(function (c) {
      var when = new Date(c.ts);
      return el("li", {}, [
        el("time", { datetime: c.ts, title: c.ts, text: hhmm(when) + " UTC" }),
        el("div", {}, [
          el("div", {}, [
            c.from_stage ? pill(c.from_stage) : el("span", { class: "muted small", text: "new" }),
            el("span", { class: "arrow", text: "→" }),
            pill(c.to_stage),
          ]),
          el("div", { class: "who", title: c.visitor_id, text: (c.user_id || c.visitor_id) + " · " + c.source }),
        ]),
      ]);
    });
    if (!items.length) items.push(el("li", { class: "empty", text: "no stage changes in the range" }));
    replace($("recent"), items);
  }

  // --- refresh -----------------------------------------------------------------------------

  function getJSON(path, query) {
    var url = new URL(path, location.origin);
    for (var k in query) url.searchParams.set(k, query[k]);
    return fetch(url, { headers: { Accept: "application/json" } }).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) throw new Error(path + ": " + (body.error || response.status));
        return body;
      });
    });
  }

  function setStatus(kind, text) {
    $("status").className = "status small " + kind;
    $("status").querySelector(".text").textContent = text;
  }

  function refresh() {
    clearTimeout(timer);
    var to = Date.now();
    var from = to - RANGES[range];
    var query = { from: new Date(from).toISOString(), to: new Date(to).toISOString() };
    if (source) query.source = source;
    var jobs = [
      getJSON("/api/v1/page/summary", query).then(renderSummary),
      getJSON("/api/v1/page/funnel", query).then(renderFunnel),
      getJSON("/api/v1/page/flow", query).then(renderFlow),
      getJSON("/api/v1/page/rates", query).then(function (r) { renderRates(r, from, to); }),
      getJSON("/api/v1/page/top", Object.assign({ limit: 8 }, query)).then(renderTop),
      getJSON("/api/v1/page/recent", Object.assign({ limit: 15 }, query)).then(renderRecent),
    ];
    Promise.allSettled(jobs).then(function (results) {
      var failed = results.filter(function (r) { return r.status === "rejected"; });
      if (failed.length) {
        setStatus("error", failed.length + " of " + results.length + " panels failed: " + failed[0].reason.message);
      } else {
        setStatus("ok", "updated " + new Date().toLocaleTimeString());
        document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
      }
      timer = setTimeout(refresh, REFRESH_MS);
    });
  }

  function selectRange(name) {
    range = name;
    document.querySelectorAll("#ranges button").forEach(function (b) {
      b.classList.toggle("active", b.dataset.range === name);
    });
    if (location.hash.slice(1) !== name) history.replaceState(null, "", "#" + name);
  }

  function start() {
    replace($("rates-legend"), RATE_SERIES.map(function (s) {
      return el("span", {}, [el("i", { style: "background:" + s.color }), document.createTextNode(s.label)]);
    }));
    $("scope").textContent = "bots excluded" + (source ? " · source " + source : " · all sources");
    document.querySelectorAll("#ranges button").forEach(function (b) {
      b.addEventListener("click", function () { selectRange(b.dataset.range); refresh(); });
    });
    selectRange(range);
    var resizing = null;
    window.addEventListener("resize", function () {
      clearTimeout(resizing);
      resizing = setTimeout(refresh, 300);
    });
    refresh();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
