// The drift monitor's front end: the p-value of each checked batch over time (log scale), the threshold,
// drifts and alarms, drawn as SVG from the synced `points`; a click on a batch sets `selected`, and the
// kernel answers with what the check found in it (`details`).
const NS = "http://www.w3.org/2000/svg";
const [W, H] = [640, 220];
const M = { left: 52, right: 14, top: 12, bottom: 30 };
const FLOOR = -6; // p-values below 1e-6 are drawn at 1e-6

function svg(tag, attrs = {}, parent = null) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (parent) parent.appendChild(node);
  return node;
}

function render({ model, el }) {
  el.classList.add("scanflow-drift");
  el.innerHTML = `
    <div class="sf-alert"></div>
    <div class="sf-plot-box"></div>
    <div class="sf-problem"></div>
    <div class="sf-batch" hidden><table class="sf-rows"></table><div class="sf-note"></div><div class="sf-samples"></div></div>
    <div class="sf-tip" hidden></div>`;
  const $ = (selector) => el.querySelector(selector);
  const tip = $(".sf-tip");

  function plot() {
    const points = model.get("points");
    const selected = model.get("selected");
    const root = svg("svg", { class: "sf-plot", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img" });
    const n = Math.max(points.length, 2);
    const x = (i) => M.left + ((W - M.left - M.right) * (i + 0.5)) / n;
    const y = (p) => {
      const exponent = Math.max(FLOOR, Math.min(0, Math.log10(Math.max(p, 1e-300))));
      return M.top + ((H - M.top - M.bottom) * exponent) / FLOOR;
    };
    for (let e = 0; e >= FLOOR; e--) {
      svg("line", { x1: M.left, x2: W - M.right, y1: y(10 ** e), y2: y(10 ** e), class: "sf-grid" }, root);
      svg("text", { x: M.left - 6, y: y(10 ** e) + 4, class: "sf-axis", "text-anchor": "end" }, root).textContent =
        e === 0 ? "1" : `1e${e}`;
    }
    svg("text", { x: 12, y: H / 2, class: "sf-axis", transform: `rotate(-90 12 ${H / 2})`, "text-anchor": "middle" }, root).textContent = "p-value";
    const step = Math.max(1, Math.ceil(points.length / 12));
    points.forEach((p, i) => {
      if (i % step === 0 || i === points.length - 1)
        svg("text", { x: x(i), y: H - M.bottom + 16, class: "sf-axis", "text-anchor": "middle" }, root).textContent = i + 1;
      if (p.alarm) svg("rect", { x: x(i) - 5, y: M.top, width: 10, height: H - M.top - M.bottom, class: "sf-alarm" }, root);
    });
    svg("text", { x: W - M.right, y: H - 2, class: "sf-axis", "text-anchor": "end" }, root).textContent = "batch";
    const scored = points.map((p, i) => [p, i]).filter(([p]) => p.p_value !== null);
    if (scored.length) {
      const threshold = scored.map(([p, i]) => `${x(i)},${y(p.alpha)}`).join(" ");
      svg("polyline", { points: scored.length > 1 ? threshold : `${M.left},${y(scored[0][0].alpha)} ${W - M.right},${y(scored[0][0].alpha)}`, class: "sf-threshold" }, root);
      const [last] = scored[scored.length - 1];
      svg("text", { x: W - M.right, y: y(last.alpha) - 4, class: "sf-axis sf-threshold-label", "text-anchor": "end" }, root).textContent = `threshold ${last.alpha}`;
      svg("polyline", { points: scored.map(([p, i]) => `${x(i)},${y(p.p_value)}`).join(" "), class: "sf-line" }, root);
    }
    points.forEach((p, i) => {
      const cls = ["sf-point", p.p_value === null ? "sf-failed" : p.drift ? "sf-drift" : "sf-ok"];
      if (p.alarm) cls.push("sf-alarmed");
      if (p.findings) cls.push("sf-findings");
      if (p.batch === selected) cls.push("sf-selected");
      const yy = p.p_value === null ? H - M.bottom - 4 : y(p.p_value);
      const dot = svg("circle", { cx: x(i), cy: yy, r: p.batch === selected ? 7 : 5, class: cls.join(" ") }, root);
      dot.dataset.batch = p.batch;
      dot.dataset.index = i;
    });
    $(".sf-plot-box").replaceChildren(root);
  }

  function banner() {
    const alert = $(".sf-alert");
    alert.textContent = model.get("alert");
    alert.className = `sf-alert sf-${model.get("level")}`;
    $(".sf-problem").textContent = model.get("problem");
  }

  function details() {
    const details = model.get("details");
    const box = $(".sf-batch");
    box.hidden = !model.get("selected");
    if (box.hidden || details.batch !== model.get("selected")) return;
    $(".sf-rows").innerHTML = (details.rows || []).map(([k, v]) => `<tr><th>${k}</th><td>${v}</td></tr>`).join("");
    $(".sf-note").textContent = details.note || "";
    $(".sf-samples").replaceChildren(
      ...(details.samples || []).map((s) => {
        const figure = document.createElement("figure");
        figure.className = "sf-sample";
        figure.innerHTML = s.image ? `<img alt="sample ${s.index}" src="${s.image}">` : s.html;
        const caption = document.createElement("figcaption");
        caption.textContent = `#${s.index} · score ${s.score.toPrecision(3)}`;
        figure.appendChild(caption);
        return figure;
      }),
    );
  }

  function onClick(event) {
    const batch = event.target.dataset && event.target.dataset.batch;
    if (!batch) return;
    model.set("selected", batch);
    model.save_changes();
    plot();
    details();
  }

  function onHover(event) {
    const index = event.target.dataset && event.target.dataset.index;
    if (index === undefined) {
      tip.hidden = true;
      return;
    }
    const p = model.get("points")[Number(index)];
    const when = new Date(p.time * 1000).toLocaleTimeString();
    const verdict = p.p_value === null ? `not scored: ${p.error}` : `p = ${p.p_value.toPrecision(3)}${p.drift ? " · drift" : ""}`;
    tip.textContent = `batch ${Number(index) + 1} · ${verdict}${p.alarm ? " · alarm" : ""} · ${when}`;
    const box = el.getBoundingClientRect();
    tip.style.left = `${event.clientX - box.left + 12}px`;
    tip.style.top = `${event.clientY - box.top + 12}px`;
    tip.hidden = false;
  }

  const handlers = {
    "change:points": plot,
    "change:selected": () => (plot(), details()),
    "change:details": details,
    "change:alert": banner,
    "change:level": banner,
    "change:problem": banner,
  };
  for (const [name, handler] of Object.entries(handlers)) model.on(name, handler);
  const plotBox = $(".sf-plot-box");
  plotBox.addEventListener("click", onClick);
  plotBox.addEventListener("mousemove", onHover);
  plotBox.addEventListener("mouseleave", () => (tip.hidden = true));
  banner();
  plot();
  details();
  return () => {
    for (const [name, handler] of Object.entries(handlers)) model.off(name, handler);
  };
}

export default { render };
