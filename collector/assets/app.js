// finwait dashboard: local times, live refresh, charts. Pages work without it.
(function () {
  "use strict";

  var STATE_COLOURS = {
    ESTABLISHED: "#1d4f91", CLOSE_WAIT: "#b3261e", FIN_WAIT2: "#d97706", FIN_WAIT1: "#f59e0b",
    TIME_WAIT: "#6b7280", LAST_ACK: "#7c3aed", SYN_RECV: "#0d9488", SYN_SENT: "#65a30d",
    LISTEN: "#94a3b8", CLOSING: "#be185d", CLOSE: "#a3a3a3"
  };

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d)) { el.textContent = d.toLocaleString(); }
    });
  }

  function secs(iso) { return Date.parse(iso) / 1000; }

  function empty(el, text) {
    el.textContent = "";
    var p = document.createElement("p");
    p.className = "nochart";
    p.textContent = text;
    el.appendChild(p);
  }

  // 1234567 → "1.2M", 15000 → "15k": axis labels that fit.
  function compact(n) {
    var a = Math.abs(n);
    if (a >= 1e6) { return (n / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M"; }
    if (a >= 1e4) { return (n / 1e3).toFixed(0) + "k"; }
    return String(n);
  }

  function plot(el, series, xs, ys, extraAxes) {
    el.textContent = "";
    if (!window.uPlot || xs.length === 0) { empty(el, "No data in this range."); return; }
    // The x axis spans the range asked for (data-span seconds up to now), so a few
    // points do not stretch over years.
    var now = Date.now() / 1000;
    var span = parseInt(el.getAttribute("data-span"), 10) || (now - xs[0]);
    var opts = {
      width: Math.max(320, el.clientWidth - 16), height: 240,
      series: [{}].concat(series),
      axes: [{}, { size: 56, values: function (u, vals) { return vals.map(compact); } }]
        .concat(extraAxes || []),
      scales: { x: { time: true, range: function () { return [now - span, now]; } } },
      legend: { live: false }
    };
    new window.uPlot(opts, [xs].concat(ys), el);
  }

  function stateSeries(points) {
    var names = {};
    points.forEach(function (p) { Object.keys(p.states || {}).forEach(function (k) { names[k] = true; }); });
    var keys = Object.keys(names).filter(function (k) { return k !== "LISTEN"; });
    var xs = points.map(function (p) { return secs(p.t); });
    var ys = keys.map(function (k) { return points.map(function (p) { return (p.states || {})[k] || 0; }); });
    var series = keys.map(function (k) { return { label: k, stroke: STATE_COLOURS[k] || "#333", width: 1.5 }; });
    return { xs: xs, ys: ys, series: series };
  }

  var charts = {
    timeline: function (el, data) {
      var s = stateSeries(data.points || []);
      plot(el, s.series, s.xs, s.ys);
    },
    fleet: function (el, data) {
      var points = data.points || [];
      var s = stateSeries(points);
      // Open leaks have their own scale (right axis): hundreds beside a fleet's
      // hundred thousand ESTABLISHED would lie flat on the floor.
      s.series.unshift({ label: "open leaks", scale: "leaks", stroke: "#b3261e", width: 2.5,
        fill: "rgba(179,38,30,0.08)" });
      s.ys.unshift(points.map(function (p) { return p.open_leaks; }));
      plot(el, s.series, s.xs, s.ys, [{ scale: "leaks", side: 1, size: 56, stroke: "#b3261e",
        grid: { show: false }, values: function (u, vals) { return vals.map(compact); } }]);
    },
    leaks: function (el, data) {
      var ev = [];
      (data.leaks || []).forEach(function (l) {
        ev.push([secs(l.holder.since), 1]);
        if (l.until) { ev.push([secs(l.until), -1]); }
      });
      ev.sort(function (a, b) { return a[0] - b[0]; });
      var xs = [], ys = [], n = 0;
      ev.forEach(function (e) { n += e[1]; xs.push(e[0]); ys.push(n); });
      if (xs.length) { xs.push(Date.now() / 1000); ys.push(n); }
      plot(el, [{ label: "open leaks", stroke: "#b3261e", width: 2 }], xs, [ys]);
    }
  };

  function drawCharts(root) {
    root.querySelectorAll(".chart[data-src]").forEach(function (el) {
      var draw = charts[el.getAttribute("data-kind")];
      if (!draw) { return; }
      fetch(el.getAttribute("data-src"), { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(function (data) { draw(el, data); })
        .catch(function (why) { empty(el, "Chart data unavailable (" + why + ")."); });
    });
  }

  function enhance(root) { localTimes(root); drawCharts(root); }

  // Live refresh: a visible, pausable interval, remembered per browser.
  var KEY = "finwait.refresh";
  var left = 0, timer = null, paused = false;

  function status(text) {
    var s = document.getElementById("refresh-status");
    if (s) { s.textContent = text; }
  }

  function every() {
    var sel = document.getElementById("refresh-every");
    return sel ? parseInt(sel.value, 10) || 0 : 0;
  }

  function reload() {
    if (!window.htmx) { window.location.reload(); return; }
    window.htmx.ajax("GET", window.location.pathname + window.location.search,
      { target: "#main", select: "#main", swap: "outerHTML" });
  }

  function tick() {
    var n = every();
    if (n === 0) { status("off"); return; }
    if (paused) { status("paused"); return; }
    left -= 1;
    if (left <= 0) { left = n; reload(); }
    status("in " + left + " s");
  }

  function startRefresh() {
    var box = document.getElementById("refresh");
    var sel = document.getElementById("refresh-every");
    var pause = document.getElementById("refresh-pause");
    if (!box || !sel || !pause) { return; }
    box.hidden = false;
    var saved = window.localStorage ? window.localStorage.getItem(KEY) : null;
    sel.value = saved === null ? "30" : saved;
    left = every();
    sel.addEventListener("change", function () {
      if (window.localStorage) { window.localStorage.setItem(KEY, sel.value); }
      left = every();
      tick();
    });
    pause.addEventListener("click", function () {
      paused = !paused;
      pause.setAttribute("aria-pressed", paused ? "true" : "false");
      pause.textContent = paused ? "Resume" : "Pause";
      tick();
    });
    timer = window.setInterval(tick, 1000);
    tick();
  }

  document.addEventListener("DOMContentLoaded", function () {
    enhance(document);
    startRefresh();
    document.body.addEventListener("htmx:afterSettle", function (e) { enhance(e.target); });
  });
  void timer;
}());
