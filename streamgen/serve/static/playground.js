// The streamgen playground: one stream of `streamgen serve`, over its
// WebSocket protocol (docs/serving.md). No library, no build step; every URL
// is relative to the page, so it works behind a proxy at any prefix.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const ID = "p";  // the page's one stream
  const WIDTH = 0.8;  // Out[i] is drawn over x in [i, i + 0.8), as `streamgen plot`
  const DRAG_MS = 60;  // a drag steps at most every DRAG_MS
  const COLORS = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

  const dir = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
  const base = new URL(dir, location.href);
  const wsURL = new URL("v1/streams", base);
  wsURL.protocol = location.protocol === "https:" ? "wss:" : "ws:";

  // What the page sent, received and drew (read by the browser tests too).
  const state = {
    model: null, token: null, ws: null, connected: false, waiting: [],
    steps: [],  // {x, out} or {x, error}, in order
    outs: [],  // the Out[i] of the current drawing
    drawn: {segments: 0, stops: 0, empty: 0},
    settings: {stop: null, max_steps: null, sampler: null}, cap: 1, saved: null, errors: [],
    busy: 0,
    seed: null,  // the stream's seed (sent, or drawn by the server and read from its state)
  };
  window.playground = state;

  function showError(text) {
    state.errors.push(text);
    $("error").textContent = text;
  }
  function status(text) { $("status").textContent = text; }

  // ---------------------------------------------------------------- //
  // The model and the connection.
  // ---------------------------------------------------------------- //
  async function loadModel() {
    const headers = state.token ? {Authorization: "Bearer " + state.token} : {};
    const response = await fetch(new URL("v1/model", base), {headers, cache: "no-store"});
    if (response.status === 401) return null;
    if (!response.ok) throw new Error("GET v1/model: HTTP " + response.status);
    return response.json();
  }

  async function start() {
    let model;
    try {
      model = await loadModel();
    } catch (error) {
      showError(String(error.message || error));
      return;
    }
    if (model === null) {  // --token: ask for it
      $("token-form").hidden = false;
      status("token needed");
      if (state.token) showError("wrong token");
      return;
    }
    $("token-form").hidden = true;
    $("error").textContent = "";
    state.model = model;
    $("model").textContent = model.model + ": " + model.input_size + " in, " +
      model.output_size + " out, max " + model.max_steps + " steps (" + model.runtime + ")";
    buildControls(model);
    connect();
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("token").value;
    start();
  });

  function connect() {
    const protocols = ["streamgen.v1"];
    if (state.token) protocols.push("bearer." + state.token);
    const ws = new WebSocket(wsURL, protocols);
    state.ws = ws;
    status("connecting");
    ws.onopen = () => {
      state.connected = true;
      status("connected");
      applySettings();
    };
    ws.onmessage = (event) => {
      const waiter = state.waiting.shift();
      if (waiter) waiter(JSON.parse(event.data));
    };
    ws.onclose = (event) => {
      state.connected = false;
      status("closed (" + event.code + ")");
      for (const waiter of state.waiting.splice(0)) waiter(null);
    };
  }

  // One message -> its one reply (the server answers each message, in order).
  function request(items) {
    if (!state.connected) {
      showError("not connected");
      return Promise.resolve(null);
    }
    return new Promise((resolve) => {
      state.waiting.push(resolve);
      state.ws.send(JSON.stringify(items));
    });
  }

  async function one(item) {
    state.busy += 1;
    try {
      const reply = await request([Object.assign({id: ID}, item)]);
      if (reply === null) return null;
      const answer = reply[0];
      if (answer.error !== undefined) showError(answer.error);
      return answer;
    } finally {
      state.busy -= 1;
    }
  }

  // ---------------------------------------------------------------- //
  // Steps.
  // ---------------------------------------------------------------- //
  async function step(x) {
    const record = {x: x.slice()};
    state.steps.push(record);
    const answer = await one({x});
    if (answer === null) return;
    if (answer.error !== undefined) {
      record.error = answer.error;
      return;
    }
    record.out = answer.out;
    state.outs.push(answer.out);
    drawPad();
    drawPlot();
    listOut(state.outs.length - 1, answer.out);
  }

  function parseNumbers(text) {
    const parts = text.trim().replace(/^\[|\]$/g, "").split(/[\s,]+/).filter((p) => p !== "");
    const values = parts.map(Number);
    if (!values.every(Number.isFinite)) return "expected numbers, got " + JSON.stringify(text);
    if (values.length !== state.model.input_size) {
      return "expected " + state.model.input_size + " numbers, got " + values.length;
    }
    return values;
  }

  $("typed").addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || !state.model) return;
    event.preventDefault();
    const values = parseNumbers(event.target.value);
    if (typeof values === "string") {
      showError(values);
      return;
    }
    event.target.value = "";
    step(values);
  });

  $("play").addEventListener("click", async () => {
    if (!state.model) return;
    const button = $("play");
    button.disabled = true;
    try {
      const lines = $("sequence").value.replace(/\s+$/, "").split("\n");  // no trailing reset
      for (let n = 0; n < lines.length; n++) {
        const line = lines[n].split("#")[0];
        if (line.trim() === "") {
          if (lines[n].trim() === "" && state.outs.length) await reset();
          continue;
        }
        const values = parseNumbers(line);
        if (typeof values === "string") {
          showError("line " + (n + 1) + ": " + values);
          return;
        }
        await step(values);
        await new Promise((resolve) => setTimeout(resolve, 40));
      }
    } finally {
      button.disabled = false;
    }
  });

  // The pad: the pointer's position is channels 0 and 1; sliders the rest.
  const pad = $("pad");
  let dragging = false, lastDrag = 0;

  function padInput(event) {
    const rect = pad.getBoundingClientRect();
    const scale = Number($("scale").value) || 1;
    const u = (event.clientX - rect.left) / rect.width * 2 - 1;
    const v = 1 - (event.clientY - rect.top) / rect.height * 2;
    const x = [u * scale];
    if (state.model.input_size > 1) x.push(v * scale);
    for (let c = 2; c < state.model.input_size; c++) x.push(Number($("slider" + c).value) * scale);
    return x.slice(0, state.model.input_size).map((value) => Math.round(value * 1e4) / 1e4);
  }

  pad.addEventListener("pointerdown", (event) => {
    if (!state.model) return;
    dragging = true;
    lastDrag = performance.now();
    pad.setPointerCapture(event.pointerId);
    step(padInput(event));
  });
  pad.addEventListener("pointermove", (event) => {
    if (!dragging || !state.model) return;
    const now = performance.now();
    if (now - lastDrag < DRAG_MS || state.busy) return;  // throttled
    lastDrag = now;
    step(padInput(event));
  });
  for (const name of ["pointerup", "pointercancel"]) {
    pad.addEventListener(name, () => { dragging = false; });
  }

  // ---------------------------------------------------------------- //
  // Controls.
  // ---------------------------------------------------------------- //
  function buildControls(model) {
    const sliders = $("sliders");
    sliders.textContent = "";
    for (let c = 2; c < model.input_size; c++) {
      const label = document.createElement("label");
      label.textContent = "channel " + c + " ";
      const input = document.createElement("input");
      Object.assign(input, {type: "range", id: "slider" + c, min: -1, max: 1, step: 0.01, value: 0});
      label.appendChild(input);
      sliders.appendChild(label);
    }
    const criteria = $("criteria");
    criteria.textContent = "";
    (model.stop || []).forEach((criterion, k) => {
      const label = document.createElement("label");
      label.textContent = criterion.class_name + " threshold ";
      const input = document.createElement("input");
      Object.assign(input, {type: "number", id: "threshold" + k, step: 0.05, size: 5});
      if (criterion.config.threshold === undefined) {
        input.disabled = true;
        input.placeholder = "n/a";
      } else {
        input.value = criterion.config.threshold;
      }
      label.appendChild(input);
      criteria.appendChild(label);
    });
    const cap = $("cap");
    cap.max = model.max_steps;
    cap.value = model.max_steps;
    buildSampling(model);
  }

  // The sampler kinds a model's frames take: every one for categorical and
  // mdn frames; greedy alone for mse / mae (and a server that does not say).
  const SAMPLED_KINDS = ["categorical", "mdn"];
  const CLASS_OF = {greedy: "Greedy", random: "Random", "top-k": "TopK", "top-p": "TopP"};

  function buildSampling(model) {
    const sampled = SAMPLED_KINDS.includes(model.frame_loss);
    const select = $("sampler");
    for (const option of Array.from(select.options)) {
      option.hidden = option.disabled = !sampled && option.value !== "greedy";
    }
    const note = $("sampler-note");
    note.hidden = sampled;
    note.textContent = sampled ? "" : "This model's frames are " + (model.frame_loss || "not said") +
      ": it predicts one frame (the mean), with no distribution to draw from, so greedy " +
      "decoding is the only sampler (train with --frame-loss mdn or categorical to sample).";
    const initial = model.sampler || {class_name: "Greedy", config: {}};
    const name = Object.keys(CLASS_OF).find((key) => CLASS_OF[key] === initial.class_name);
    select.value = sampled && name ? name : "greedy";
    const config = initial.config || {};
    if (config.temperature !== undefined) $("temperature").value = config.temperature;
    if (config.k !== undefined) $("top-k").value = config.k;
    if (config.p !== undefined) $("top-p").value = config.p;
    showSamplerOptions();
  }

  function showSamplerOptions() {
    const name = $("sampler").value;
    $("temperature").closest("label").hidden = name === "greedy";
    $("top-k").closest("label").hidden = name !== "top-k";
    $("top-p").closest("label").hidden = name !== "top-p";
  }
  $("sampler").addEventListener("change", showSamplerOptions);

  // The `sampler` of the open message: {class_name, config} (samplers.serialize).
  function samplerSetting() {
    const name = $("sampler").value;
    const config = {};
    if (name !== "greedy") config.temperature = Number($("temperature").value);
    if (name === "top-k") config.k = Number($("top-k").value);
    if (name === "top-p") config.p = Number($("top-p").value);
    return {class_name: CLASS_OF[name], config};
  }

  // The seed of a STATE: its row's last 4 float32 values are the seed's and
  // the position's 16-bit halves (docs/serving.md, "States").
  function seedOfState(value) {
    const bytes = Uint8Array.from(atob(value.data), (c) => c.charCodeAt(0));
    const row = new DataView(bytes.buffer);
    const at = bytes.length - 16;
    return row.getFloat32(at, true) * 65536 + row.getFloat32(at + 4, true);
  }

  function settings() {
    const model = state.model;
    const stop = (model.stop || []).map((criterion, k) => {
      const config = Object.assign({}, criterion.config);
      const value = $("threshold" + k).value;
      if (config.threshold !== undefined && value !== "") config.threshold = Number(value);
      return {class_name: criterion.class_name, config};
    });
    const cap = Math.round(Number($("cap").value));
    const open = {stop, max_steps: cap >= 1 ? cap : model.max_steps, sampler: samplerSetting()};
    const seed = $("seed").value.trim();
    if (seed !== "") open.seed = Number(seed);  // blank: the server draws a fresh one
    return open;
  }

  async function applySettings() {
    const open = settings();
    const answer = await one({open});
    if (answer && answer.ok) {
      state.settings = open;
      state.cap = open.max_steps;
      $("error").textContent = "";
      clearDrawing();
      await showSeed(open.seed);
    }
  }

  async function showSeed(sent) {
    let seed = sent;
    if (seed === undefined) {  // drawn by the server: its state carries it
      const answer = await one({get_state: true});
      seed = answer && answer.state ? seedOfState(answer.state) : null;
    }
    state.seed = seed;
    $("seed-used").textContent = seed === null ? "" : "seed " + seed +
      (sent === undefined ? " (drawn by the server; type it to replay)" : "");
  }
  $("apply").addEventListener("click", applySettings);

  async function reset() {
    const answer = await one({reset: true});
    if (answer && answer.ok) clearDrawing();
  }
  $("reset").addEventListener("click", reset);

  $("save").addEventListener("click", async () => {
    const answer = await one({get_state: true});
    if (answer && answer.state) {
      state.saved = answer.state;
      $("restore").disabled = false;
    }
  });
  $("restore").addEventListener("click", async () => {
    if (state.saved) await one({set_state: state.saved});
  });

  // ---------------------------------------------------------------- //
  // Drawing.
  // ---------------------------------------------------------------- //
  function clearDrawing() {
    state.outs = [];
    $("list").textContent = "";
    drawPad();
    drawPlot();
  }

  function drawPad() {
    const ctx = pad.getContext("2d");
    const w = pad.width, h = pad.height;
    ctx.clearRect(0, 0, w, h);
    ctx.strokeStyle = "#ddd";
    ctx.beginPath();
    ctx.moveTo(w / 2, 0); ctx.lineTo(w / 2, h); ctx.moveTo(0, h / 2); ctx.lineTo(w, h / 2);
    ctx.stroke();
    const scale = Number($("scale").value) || 1;
    const recent = state.steps.filter((s) => s.out !== undefined).slice(-state.outs.length || 0);
    ctx.fillStyle = "#1f77b4";
    for (const s of state.outs.length ? recent : []) {
      const u = (s.x[0] / scale + 1) / 2 * w;
      const v = (1 - (s.x.length > 1 ? s.x[1] / scale : 0)) / 2 * h;
      ctx.beginPath();
      ctx.arc(u, v, 3, 0, 2 * Math.PI);
      ctx.fill();
    }
  }

  // One panel per output channel; Out[i] a segment from x = i, frame j at
  // i + 0.8 j / cap; a red x for STOP after the last frame (at 0 for an
  // empty Out[i]); a grey ring marks an empty Out[i]; no STOP where the cap ended it.
  function drawPlot() {
    const canvas = $("plot");
    const ctx = canvas.getContext("2d");
    const outs = state.outs;
    const channels = state.model ? state.model.output_size : 1;
    const cap = state.cap;
    const w = canvas.width, h = canvas.height, left = 44, right = 10, top = 8, bottom = 22;
    const panel = (h - top - bottom) / channels;
    const steps = Math.max(outs.length, 4);
    const X = (t) => left + t / steps * (w - left - right);
    ctx.clearRect(0, 0, w, h);
    ctx.font = "11px sans-serif";
    const drawn = {segments: 0, stops: 0, empty: 0};
    for (let c = 0; c < channels; c++) {
      let lo = 0, hi = 0;
      for (const out of outs) for (const frame of out) { lo = Math.min(lo, frame[c]); hi = Math.max(hi, frame[c]); }
      if (hi - lo < 1e-6) { lo -= 1; hi += 1; }
      const pad_ = (hi - lo) * 0.08;
      lo -= pad_; hi += pad_;
      const y0 = top + c * panel, Y = (v) => y0 + (hi - v) / (hi - lo) * (panel - 6);
      ctx.strokeStyle = "#ccc";
      ctx.strokeRect(left, y0, w - left - right, panel - 6);
      ctx.fillStyle = "#555";
      ctx.fillText("ch " + c, 4, y0 + 12);
      ctx.fillText(hi.toFixed(2), 4, y0 + 26);
      ctx.fillText(lo.toFixed(2), 4, y0 + panel - 8);
      ctx.strokeStyle = "#eee";
      ctx.beginPath(); ctx.moveTo(left, Y(0)); ctx.lineTo(w - right, Y(0)); ctx.stroke();
      outs.forEach((out, i) => {
        const color = COLORS[0];
        if (out.length) {
          ctx.strokeStyle = color;
          ctx.fillStyle = color;
          ctx.lineWidth = 1.5;
          ctx.beginPath();
          out.forEach((frame, j) => {
            const px = X(i + WIDTH * j / cap), py = Y(frame[c]);
            if (j === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
          });
          ctx.stroke();
          out.forEach((frame, j) => {
            ctx.beginPath();
            ctx.arc(X(i + WIDTH * j / cap), Y(frame[c]), 2.2, 0, 2 * Math.PI);
            ctx.fill();
          });
          if (c === 0) drawn.segments += 1;
        } else {
          ctx.strokeStyle = "#999";
          ctx.lineWidth = 1;
          ctx.beginPath();
          ctx.arc(X(i), Y(0), 5, 0, 2 * Math.PI);
          ctx.stroke();
          if (c === 0) drawn.empty += 1;
        }
        if (out.length < cap) {  // the step after the last frame was STOP
          const px = X(i + WIDTH * out.length / cap), py = Y(out.length ? out[out.length - 1][c] : 0);
          ctx.strokeStyle = "#d62728";
          ctx.lineWidth = 2;
          ctx.beginPath();
          ctx.moveTo(px - 4, py - 4); ctx.lineTo(px + 4, py + 4);
          ctx.moveTo(px - 4, py + 4); ctx.lineTo(px + 4, py - 4);
          ctx.stroke();
          if (c === 0) drawn.stops += 1;
        }
      });
    }
    ctx.fillStyle = "#555";
    ctx.lineWidth = 1;
    for (let i = 0; i < steps; i++) ctx.fillText(String(i), X(i) - 3, h - 6);
    state.drawn = drawn;
  }

  function listOut(i, out) {
    const item = document.createElement("li");
    item.value = i;
    if (out.length === 0) {
      item.className = "empty";
      item.textContent = "\u2205 empty (STOP first)";
    } else {
      item.textContent = out.map((frame) => "[" + frame.join(", ") + "]").join(" ") +
        (out.length < state.cap ? " STOP" : " (cap)");
    }
    const list = $("list");
    list.appendChild(item);
    list.scrollTop = list.scrollHeight;  // the list only, not the page
  }

  drawPad();
  drawPlot();
  start();
})();
