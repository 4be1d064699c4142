// The live graph's front end: graphviz's SVG made clickable and recoloured from the synced traits.
// Everything it shows comes from the Python widget (scanflow_nb/widgets/graph.py); this module only
// paints, handles the pointer and the keys, and sets `selected`.
const XLINK = "http://www.w3.org/1999/xlink";
const KEYS = { ArrowUp: [0, -1], ArrowDown: [0, 1], ArrowLeft: [-1, 0], ArrowRight: [1, 0] };

// As scanflow_nb.graph.format_seconds: 1.2 s, 1 min 15 s, 1 h 2 min.
function seconds(s) {
  s = Math.max(0, s);
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(Math.round(s) / 60);
  if (m < 60) return `${m} min ${Math.round(s) % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function escape(text) {
  const div = document.createElement("div");
  div.textContent = text;
  return div.innerHTML;
}

function render({ model, el }) {
  el.classList.add("scanflow-graph");
  el.innerHTML = `
    <div class="sf-head"><progress class="sf-bar"></progress><span class="scanflow-summary"></span></div>
    <div class="sf-message"></div>
    <div class="sf-drawing" tabindex="0" data-lm-suppress-shortcuts="true"
         aria-label="workflow graph: click an executor, or use the arrow keys; Enter opens its log"></div>
    <div class="sf-tip" hidden></div>
    <div class="sf-panel" hidden>
      <div class="sf-details"></div>
      <details class="sf-log-box"><summary>log tail</summary><pre class="scanflow-log"></pre></details>
    </div>`;
  const $ = (selector) => el.querySelector(selector);
  const drawing = $(".sf-drawing");
  const tip = $(".sf-tip");
  const tails = new Map(); // key -> the latest log lines, pushed by the kernel as they arrive
  let shapes = new Map(); // key -> the node's <g>
  let room = new Map(); // key -> the width its state line may take
  let painted = {}; // key -> what was last painted, to touch only nodes that changed
  let offset = 0; // browser clock minus kernel clock, so running durations tick here

  const node = (key) => model.get("nodes")[key];
  const label = (key) => {
    const n = node(key);
    if (!n) return "pending";
    if (!n.running || n.started == null) return n.text;
    const parts = [n.state, seconds(Date.now() / 1000 - offset - n.started)];
    if (n.attempt > 1) parts.push(`try ${n.attempt}`);
    return parts.join(" · ");
  };

  function drawLayout() {
    const svg = model.get("svg");
    if (svg) {
      drawing.innerHTML = svg;
    } else {
      drawing.innerHTML = `<pre class="scanflow-graph-text"></pre>`;
      drawing.firstChild.textContent = model.get("text");
    }
    shapes = new Map();
    room = new Map();
    painted = {};
    for (const title of drawing.querySelectorAll("title")) {
      const g = title.parentNode; // native tooltips would cover ours: keep the names as data
      if (g.classList.contains("sf-executor")) {
        g.dataset.key = title.textContent;
        shapes.set(title.textContent, g);
      } else if (g.classList.contains("cluster")) {
        g.dataset.workflow = title.textContent.replace(/^cluster_/, "");
      }
      title.remove();
    }
    for (const a of drawing.querySelectorAll("a")) a.removeAttributeNS(XLINK, "title");
    for (const [key, g] of shapes) {
      const width = g.querySelector("path, polygon")?.getBBox().width; // 0 while the output is hidden
      room.set(key, width > 0 ? width - 6 : Infinity);
    }
    paint();
    showSelection(false);
  }

  function paint() {
    // writes first, then one measuring pass, then the squeezes: one layout however many nodes changed
    const nodes = model.get("nodes");
    const palette = model.get("palette");
    const relabelled = [];
    for (const [key, g] of shapes) {
      const n = nodes[key];
      if (!n) continue;
      const text = label(key);
      if (painted[key] === n.state + text) continue;
      painted[key] = n.state + text;
      for (const cls of [...g.classList]) {
        if (cls.startsWith("sf-") && cls !== "sf-executor" && cls !== "sf-selected") g.classList.remove(cls);
      }
      g.classList.add(`sf-${n.state}`);
      const [fill, border] = palette[n.state] || ["#ffffff", "#888888"];
      // a service has two borders (graphviz peripheries): the first shape is filled, every one is stroked
      g.querySelectorAll("path, polygon").forEach((shape, i) => {
        if (i === 0) shape.setAttribute("fill", fill);
        shape.setAttribute("stroke", border);
        shape.setAttribute("stroke-width", n.state === "running" || n.state === "serving" ? "2" : "1");
      });
      const texts = g.querySelectorAll("text");
      const line = texts[texts.length - 1];
      if (texts.length > 1 && line.textContent !== text) {
        line.removeAttribute("textLength");
        line.textContent = text;
        relabelled.push([key, line]);
      }
    }
    const squeeze = relabelled.filter(([key, line]) => line.getComputedTextLength() > room.get(key));
    for (const [key, line] of squeeze) {
      line.setAttribute("textLength", String(room.get(key)));
      line.setAttribute("lengthAdjust", "spacingAndGlyphs");
    }
  }

  function head() {
    const bar = model.get("bar");
    const progress = $(".sf-bar");
    progress.max = Math.max(1, bar.total || 0);
    progress.value = bar.done || 0;
    progress.dataset.style = bar.style || "info";
    $(".scanflow-summary").textContent = model.get("summary");
    $(".sf-message").innerHTML = model.get("message");
  }

  function showSelection(scroll = true) {
    const key = model.get("selected");
    for (const g of drawing.querySelectorAll(".sf-selected")) g.classList.remove("sf-selected");
    const g = shapes.get(key);
    if (g) {
      g.classList.add("sf-selected");
      if (scroll) g.scrollIntoView({ block: "nearest", inline: "nearest" });
    }
    details();
  }

  function details() {
    const key = model.get("selected");
    const panel = $(".sf-panel");
    panel.hidden = !key;
    if (!key) return;
    const rows = [["state", escape(label(key))], ...((node(key) || {}).rows || []), ...(model.get("info")[key] || [])];
    const table = rows.map(([name, value]) => `<tr><th>${name}</th><td>${value}</td></tr>`).join("");
    $(".sf-details").innerHTML = `<div class="sf-key">${escape(key)}</div><table class="scanflow-details">${table}</table>`;
    if ((node(key) || {}).state === "failed") $(".sf-log-box").open = true; // a failure's log is what one looks for
    showLog();
  }

  function showLog() {
    const key = model.get("selected");
    const lines = tails.get(key);
    const text = lines ? lines.join("\n") : model.get("log");
    $(".scanflow-log").textContent = text || "no output yet";
  }

  function choose(key) {
    if (key === model.get("selected")) return;
    model.set("selected", key);
    model.save_changes();
    showSelection();
  }

  function move([dx, dy]) {
    const keys = [...(shapes.size ? shapes.keys() : Object.keys(model.get("info")))];
    const current = model.get("selected");
    if (!keys.length) return;
    if (!current || !keys.includes(current)) return choose(keys[0]);
    if (!shapes.size) {
      const step = dx + dy > 0 ? 1 : -1; // the text tree: previous or next executor
      return choose(keys[Math.min(keys.length - 1, Math.max(0, keys.indexOf(current) + step))]);
    }
    const centre = (key) => {
      const box = shapes.get(key).getBBox();
      return [box.x + box.width / 2, box.y + box.height / 2];
    };
    const [x0, y0] = centre(current);
    let best = null;
    let bestScore = Infinity;
    for (const key of keys) {
      const [x, y] = centre(key);
      const along = (x - x0) * dx + (y - y0) * dy;
      const across = Math.abs((x - x0) * dy) + Math.abs((y - y0) * dx);
      if (key === current || along <= 1) continue;
      const score = along + 2 * across; // the nearest node in that direction, straight ahead first
      if (score < bestScore) [best, bestScore] = [key, score];
    }
    if (best) choose(best);
  }

  function onKey(event) {
    if (KEYS[event.key]) move(KEYS[event.key]);
    else if (event.key === "Enter" && model.get("selected")) {
      $(".sf-log-box").open = true;
      $(".sf-log-box").scrollIntoView({ block: "nearest" });
    } else if (event.key === "Escape") choose("");
    else return;
    event.preventDefault();
    event.stopPropagation();
  }

  const target = (event) => event.target.closest && event.target.closest("g.sf-executor");
  function onClick(event) {
    const g = target(event);
    if (!g) return;
    drawing.focus({ preventScroll: true });
    choose(g.dataset.key);
    if (event.detail > 1) $(".sf-log-box").open = true; // a double click opens the log, as Enter does
  }
  function onHover(event) {
    const g = target(event);
    if (!g) {
      tip.hidden = true;
      return;
    }
    tip.textContent = `${g.dataset.key} · ${label(g.dataset.key)}`;
    const box = el.getBoundingClientRect();
    tip.style.left = `${event.clientX - box.left + 12}px`;
    tip.style.top = `${event.clientY - box.top + 12}px`;
    tip.hidden = false;
  }

  const onNodes = () => {
    paint();
    if (model.get("selected")) details();
  };
  const onClock = () => {
    offset = Date.now() / 1000 - model.get("clock");
  };
  const onMessage = (msg) => {
    if (!msg || !msg.tails) return;
    for (const [key, lines] of Object.entries(msg.tails)) tails.set(key, lines);
    if (model.get("selected") in msg.tails) showLog();
  };
  const handlers = {
    "change:svg": drawLayout,
    "change:text": drawLayout,
    "change:nodes": onNodes,
    "change:info": details,
    "change:selected": () => showSelection(),
    "change:log": showLog,
    "change:summary": head,
    "change:bar": head,
    "change:message": head,
    "change:clock": onClock,
    "msg:custom": onMessage,
  };
  for (const [name, handler] of Object.entries(handlers)) model.on(name, handler);
  drawing.addEventListener("click", onClick);
  drawing.addEventListener("mousemove", onHover);
  drawing.addEventListener("mouseleave", () => (tip.hidden = true));
  drawing.addEventListener("keydown", onKey);
  const ticker = setInterval(() => {
    const nodes = model.get("nodes");
    if (!Object.values(nodes).some((n) => n.running)) return;
    paint();
    const selected = nodes[model.get("selected")];
    if (selected && selected.running) details();
  }, 1000);

  onClock();
  head();
  drawLayout();
  model.send({ kind: "ready" }); // asks the kernel for the log tails this view has not seen
  return () => {
    clearInterval(ticker);
    for (const [name, handler] of Object.entries(handlers)) model.off(name, handler);
  };
}

export default { render };
