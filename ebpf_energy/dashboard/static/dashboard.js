// ebpf-energy dashboard: frames arrive as server-sent events (/events), one per
// refresh of the exporter's loop; this page keeps the last hour of them and
// draws the chosen window: power stacked (idle, other, the top rows), the
// model's total and the meter's as lines, joules per row since start.
(function () {
  "use strict";

  var KEEP_S = 3600;
  var state = {
    run: null,        // the server run the frames come from (a restart changes it)
    hello: null,
    frames: [],
    restarts: 0,
    paused: false,
    windowS: 300,
    status: "connecting",
    drawnSeq: 0,      // seq of the newest frame on the chart
    shownSeq: 0,      // seq of the frame whose model line and totals are shown
    chartKeys: [],    // row keys on the chart, bottom to top (after idle and other)
    firstDrawn: {},   // row key -> seq of the frame that first put it on the chart
    chartData: null
  };
  window.ebpfEnergy = state;  // for people poking at the page, and for the browser test

  var $ = function (id) { return document.getElementById(id); };
  var chart = null, chartSig = "", drawTimer = null, source = null;

  // -- numbers and colours ---------------------------------------------------

  function watts(w) {
    if (w == null) return "–";
    if (w === 0) return "0";
    return w >= 100 ? w.toFixed(0) : w >= 10 ? w.toFixed(1) : w >= 0.01 ? w.toFixed(2) : w.toExponential(1);
  }

  function joules(j) {
    if (j == null) return "–";
    return j >= 10 ? Math.round(j).toLocaleString("en") : j.toFixed(3);
  }

  // a stable colour per row (the same process keeps its colour as ranks change):
  // FNV-1a of the key, then golden-angle steps so close keys get far-apart hues
  function colourFor(key) {
    var h = 2166136261;
    for (var i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 16777619) >>> 0;
    return "hsl(" + Math.round((h % 1000) * 137.508) % 360 + ", 60%, " + (45 + (h >>> 10) % 3 * 8) + "%)";
  }

  var FIXED = {
    "\u0000idle": { name: "idle", colour: "#d9d9d9", detail: "idle CPUs (model)" },
    "\u0000other": { name: "other", colour: "#9e9e9e", detail: "" }
  };

  // -- the stream ------------------------------------------------------------

  function setStatus(s) {
    state.status = s;
    var el = $("status");
    var shown = state.paused && s === "live" ? "paused" : s;
    el.textContent = shown;
    el.className = "status " + shown;
  }

  function connect() {
    source = new EventSource("events");
    source.addEventListener("hello", function (e) {
      var h = JSON.parse(e.data);
      if (state.run !== null && state.run !== h.run) {
        state.restarts += 1;
        state.frames = [];   // another server run: its numbers start again
        state.firstDrawn = {};
        state.drawnSeq = 0;  // nothing of the new run is on the chart yet
      }
      state.run = h.run;
      state.hello = h;
      setStatus("live");
      scheduleDraw();
    });
    source.addEventListener("frame", function (e) {
      var f = JSON.parse(e.data);
      var last = state.frames[state.frames.length - 1];
      if (last && f.seq <= last.seq) return;  // already have it
      state.frames.push(f);
      var cut = f.t - KEEP_S;
      var n = 0;
      while (n < state.frames.length && state.frames[n].t < cut) n++;
      if (n) state.frames.splice(0, n);
      scheduleDraw();
    });
    source.onerror = function () {
      setStatus("reconnecting");
      if (source.readyState === EventSource.CLOSED) {  // the browser gave up: start again
        source.close();
        setTimeout(connect, 1000);
      }
    };
  }

  // -- drawing ---------------------------------------------------------------

  function scheduleDraw() {
    if (drawTimer === null) drawTimer = setTimeout(function () { drawTimer = null; draw(); }, 50);
  }

  function visibleFrames() {
    var fs = state.frames;
    if (!fs.length) return [];
    var from = fs[fs.length - 1].t - state.windowS;
    var i = fs.length;
    while (i > 0 && fs[i - 1].t >= from) i--;
    return fs.slice(i);
  }

  function draw() {
    var fs = visibleFrames();
    var latest = state.frames[state.frames.length - 1];
    if (latest) header(latest);
    if (state.paused || !fs.length) return;
    // a layer each for the top N rows by energy over the window and for the
    // rows of the newest frame (so a process that just started is on the chart
    // and in the legend at once), the most energy at the bottom of the stack;
    // rows outside them are added to "other", so every instant still adds up
    var energy = {}, info = {};
    fs.forEach(function (f) {
      f.rows.forEach(function (r) {
        energy[r.key] = (energy[r.key] || 0) + r.w * f.dt;
        info[r.key] = r;
      });
    });
    var ranked = Object.keys(energy).sort(function (a, b) { return energy[b] - energy[a] || (a < b ? -1 : 1); });
    var top = state.hello ? state.hello.top : 10;
    var shown = {};
    ranked.slice(0, top).forEach(function (k) { shown[k] = true; });
    fs[fs.length - 1].rows.forEach(function (r) { shown[r.key] = true; });
    var keys = ranked.filter(function (k) { return shown[k]; });
    var folded = ranked.length - keys.length;
    var layers = ["\u0000idle", "\u0000other"].concat(keys);  // bottom to top
    var xs = fs.map(function (f) { return f.t; });
    var raw = layers.map(function (k) {
      return fs.map(function (f) {
        if (k === "\u0000idle") return f.idle.w;
        var w = 0;
        if (k === "\u0000other") {
          w = f.other.w;
          f.rows.forEach(function (r) { if (!shown[r.key]) w += r.w; });
          return w;
        }
        for (var i = 0; i < f.rows.length; i++) if (f.rows[i].key === k) return f.rows[i].w;
        return 0;
      });
    });
    var sums = [], acc = xs.map(function () { return 0; });
    raw.forEach(function (vals) {
      acc = acc.map(function (a, i) { return a + vals[i]; });
      sums.push(acc);
    });
    var hasMeter = fs.some(function (f) { return f.meter; });
    var total = fs.map(function (f) { return f.total.w; });
    var meter = fs.map(function (f) { return f.meter ? f.meter.w : null; });
    // uPlot draws series in order: the top of the stack first, each filled to
    // zero, so every lower layer paints over the part that is not its own
    var data = [xs].concat(sums.slice().reverse(), [total], hasMeter ? [meter] : []);
    var sig = layers.join("\u0001") + (hasMeter ? "|meter" : "");
    if (!chart || sig !== chartSig) {
      if (chart) chart.destroy();
      chart = new uPlot(chartOptions(layers, latest, hasMeter), data, $("chart"));
      chartSig = sig;
    } else {
      chart.setData(data);
    }
    state.drawnSeq = fs[fs.length - 1].seq;
    state.chartKeys = keys;
    var first = {};  // the frame in which each row on the chart was first drawn
    keys.forEach(function (k) { first[k] = state.firstDrawn[k] || state.drawnSeq; });
    state.firstDrawn = first;
    state.chartData = { layers: layers, raw: raw };
    legend(layers, info, latest, hasMeter, folded);
  }

  function chartOptions(layers, latest, hasMeter) {
    var stack = layers.slice().reverse().map(function (k) {
      var c = FIXED[k] ? FIXED[k].colour : colourFor(k);
      return { label: FIXED[k] ? FIXED[k].name : k, stroke: c, fill: c, width: 0, points: { show: false } };
    });
    var lines = [{ label: "total (" + modelName(latest) + ")", stroke: "#111", width: 1.5, dash: [6, 4],
                   points: { show: false } }];
    if (hasMeter) lines.push({ label: "meter", stroke: "#c0392b", width: 2, points: { show: false } });
    return {
      width: Math.max(320, $("chart").clientWidth || 800),
      height: 380,
      legend: { show: false },
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, max > 0 ? max * 1.05 : 1]; } } },
      axes: [{}, { label: "watts", size: 60 }],
      series: [{}].concat(stack, lines)
    };
  }

  function modelName(f) {
    if (!f) return "model";
    var m = f.model || {};
    return (m.name || "model") + (m.measured ? ", measured" : ", modelled");
  }

  function header(f) {
    $("model").textContent = "model: " + f.model_text;
    state.shownSeq = f.seq;
    var d = f.drops, el = $("drops");
    if (d.tasks || d.events || d.cpu_s) {
      el.hidden = false;
      el.textContent = "lost in the kernel since start: " + d.tasks.toLocaleString("en") +
        " scheduling slices (" + (d.cpu_s * 1e3).toFixed(1) + " ms of CPU, in no row) to a full task map, " +
        d.events.toLocaleString("en") + " events to a full ring buffer";
    } else {
      el.hidden = true;
    }
    var text = "total " + watts(f.total.w) + " W";
    if (f.meter) text += " · meter " + watts(f.meter.w) + " W";
    text += " · " + joules(f.total.j) + " J since start · by " + f.by;
    if (state.restarts) text += " · server restarted";
    $("summary").textContent = text;
  }

  function legendRow(key, name, detail, colour, w, j, cls) {
    var tr = document.createElement("tr");
    tr.dataset.key = key;
    if (cls) tr.className = cls;
    var sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = colour;
    [sw, name, detail, watts(w), joules(j)].forEach(function (v, i) {
      var td = document.createElement("td");
      if (i === 0) td.appendChild(v); else td.textContent = v;
      td.className = ["", "name", "detail", "num", "num"][i];
      tr.appendChild(td);
    });
    return tr;
  }

  function legend(layers, info, latest, hasMeter, folded) {
    var body = $("legend");
    var rows = [legendRow("\u0000total", "total", modelName(latest), "#111", latest.total.w, latest.total.j, "line")];
    if (hasMeter) {
      rows.push(legendRow("\u0000meter", "meter", "package, measured", "#c0392b",
                          latest.meter ? latest.meter.w : null, latest.meter ? latest.meter.j : null, "line"));
    }
    var now = {};
    latest.rows.forEach(function (r) { now[r.key] = r; });
    var otherW = latest.other.w;
    latest.rows.forEach(function (r) { if (layers.indexOf(r.key) < 0) otherW += r.w; });
    // largest first, then other and idle (the stack read from the bottom up)
    layers.slice(2).concat(layers.slice(0, 2).reverse()).forEach(function (k) {
      var fx = FIXED[k];
      if (k === "\u0000other") {
        var more = latest.other.n + folded;
        rows.push(legendRow(k, fx.name, more + " more row" + (more === 1 ? "" : "s"), fx.colour, otherW, null));
      } else if (fx) {
        rows.push(legendRow(k, fx.name, fx.detail, fx.colour, latest.idle.w, latest.idle.j));
      } else {
        var r = now[k] || info[k];
        rows.push(legendRow(k, r.name, r.detail, colourFor(k), now[k] ? now[k].w : 0, r.j, now[k] ? "" : "absent"));
      }
    });
    body.replaceChildren.apply(body, rows);
  }

  // -- controls --------------------------------------------------------------

  $("pause").addEventListener("click", function () {
    state.paused = !state.paused;
    $("pause").textContent = state.paused ? "Resume" : "Pause";
    setStatus(state.status);
    draw();
  });
  $("window").addEventListener("change", function (e) {
    state.windowS = Number(e.target.value);
    draw();
  });
  window.addEventListener("resize", function () {
    if (chart) chart.setSize({ width: Math.max(320, $("chart").clientWidth), height: 380 });
  });

  connect();
})();
