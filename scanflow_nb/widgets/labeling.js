// The labeling panel's front end: shows what the Python panel sets, sends back what the person does.
// Keys (with the panel focused: click it, or move the pointer over it): a class's digit labels,
// Enter accepts the guess, Backspace undoes, s skips, + types a class that was not known before.
const FORWARDED = new Set(["Enter", "Backspace", "s", "S"]);

function editable(node) {
  return node && (node.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(node.tagName));
}

function render({ model, el }) {
  el.classList.add("scanflow-labeling");
  el.tabIndex = 0;
  el.dataset.lmSuppressShortcuts = "true"; // JupyterLab and Notebook 7 leave these keys to the panel
  el.innerHTML = `
    <div class="sf-heading"><b>Labeling</b> · <span class="sf-name"></span></div>
    <div class="sf-row"><div class="sf-sample"></div><div class="sf-guess"></div></div>
    <div class="sf-classes"></div>
    <div class="sf-actions">
      <button class="sf-skip" title="leave this sample unlabeled (s)">Skip (s)</button>
      <button class="sf-undo" title="take back the last label or skip (Backspace)">Undo (⌫)</button>
      <button class="sf-add" title="label with a class that is not listed (+)">+ New class</button>
      <button class="sf-finish" title="final retrain on every label, logged to MLflow">Finish</button>
    </div>
    <form class="sf-new" hidden>
      <input class="sf-new-name" placeholder="name of the new class" autocomplete="off">
      <button type="submit">Add and label</button> <small>Esc cancels</small>
    </form>
    <div class="sf-progress"><progress></progress> <span class="sf-counts"></span></div>
    <div class="sf-status"></div>
    <small class="sf-help"></small>`;
  const $ = (selector) => el.querySelector(selector);
  const send = (content) => model.send(content);
  const form = $(".sf-new");
  const input = $(".sf-new-name");

  function sample() {
    const shown = model.get("sample");
    const box = $(".sf-sample");
    box.dataset.sample = shown.id ?? "";
    if (shown.image) box.innerHTML = `<img alt="sample ${shown.id}" src="${shown.image}">`;
    else if (shown.html) box.innerHTML = shown.html;
    else box.innerHTML = "<i>nothing left to label</i>";
    const guess = model.get("guess");
    $(".sf-guess").innerHTML = guess.startsWith("no model") || !guess ? `<i>${guess}</i>` : "model guess: <b></b>";
    if ($(".sf-guess b")) $(".sf-guess b").textContent = guess;
  }

  function classes() {
    const box = $(".sf-classes");
    box.replaceChildren();
    model.get("classes").forEach(({ label, key }, index) => {
      const button = document.createElement("button");
      button.className = `sf-class scanflow-class-${label.replace(/\s+/g, "_")}`;
      button.dataset.label = label;
      button.textContent = label;
      if (key !== null && key !== String(label)) button.insertAdjacentHTML("beforeend", ` <kbd>${key}</kbd>`);
      button.title = `label as ${label}` + (key !== null ? ` (key ${key})` : "");
      button.addEventListener("click", () => send({ action: "label", index }));
      box.appendChild(button);
    });
    state();
  }

  function state() {
    const idle = model.get("idle");
    for (const button of el.querySelectorAll(".sf-class, .sf-skip, .sf-add")) button.disabled = idle;
    const progress = model.get("progress");
    $(".sf-progress progress").max = progress.budget || 1;
    $(".sf-progress progress").value = progress.done || 0;
    $(".sf-counts").textContent = model.get("counts");
    const status = model.get("status");
    $(".sf-status").textContent = status.text || "";
    $(".sf-status").classList.toggle("sf-error", Boolean(status.error));
    $(".sf-name").textContent = model.get("heading");
    $(".sf-help").textContent = model.get("help");
  }

  function newClass(open) {
    form.hidden = !open;
    if (open) input.focus();
    else {
      input.value = "";
      el.focus({ preventScroll: true });
    }
  }

  function onKey(event) {
    if (editable(event.target) || event.ctrlKey || event.metaKey || event.altKey) return;
    const keys = new Set(model.get("classes").map((c) => c.key).filter((k) => k !== null));
    if (event.key === "+") newClass(true);
    else if (keys.has(event.key) || FORWARDED.has(event.key)) send({ action: "press", key: event.key });
    else return;
    event.preventDefault();
    event.stopPropagation();
  }

  el.addEventListener("keydown", onKey);
  el.addEventListener("mouseenter", () => {
    if (!editable(document.activeElement)) el.focus({ preventScroll: true });
  });
  el.addEventListener("click", (event) => {
    if (!editable(event.target)) el.focus({ preventScroll: true });
  });
  $(".sf-skip").addEventListener("click", () => send({ action: "skip" }));
  $(".sf-undo").addEventListener("click", () => send({ action: "undo" }));
  $(".sf-finish").addEventListener("click", () => send({ action: "finish" }));
  $(".sf-add").addEventListener("click", () => newClass(form.hidden));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.value.trim()) send({ action: "add", name: input.value });
    newClass(false);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") newClass(false);
    event.stopPropagation(); // typing a name is not a shortcut, for the panel nor for the notebook
  });

  const handlers = {
    "change:sample": sample,
    "change:guess": sample,
    "change:classes": classes,
    "change:idle": state,
    "change:progress": state,
    "change:counts": state,
    "change:status": state,
    "change:heading": state,
  };
  for (const [name, handler] of Object.entries(handlers)) model.on(name, handler);
  sample();
  classes();
  return () => {
    for (const [name, handler] of Object.entries(handlers)) model.off(name, handler);
  };
}

export default { render };
