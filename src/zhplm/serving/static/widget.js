// The zhplm inference widget: one card per model listed by GET /info, in the style of
// Hugging Face's hosted inference widget. Plain DOM, no framework, no network but this
// server.
"use strict";

const EXAMPLES = {
  "fill-mask": { text: "北京是中国的[MASK]都。" },
  "text-classification": { text: "这本书的内容非常丰富，值得一读。" },
  "token-classification": { text: "江泽民在北京会见了克林顿。" },
  "question-answering": { question: "谁在北京会见了克林顿？",
                          context: "江泽民在北京会见了克林顿。" },
  "replaced-token-detection": { text: "今天天气很好，我们去公园散步。" },
  "feature-extraction": { text: "今天天气很好。", text2: "今天是个好天气。" },
};

let apiKey = sessionStorage.getItem("zhplm-api-key") || "";

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error : `HTTP ${status}`);
    this.status = status;
    this.errorType = body && body.error_type ? body.error_type : "Error";
    this.body = body;
  }
}

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// -- small DOM helpers ------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key === "title" || key === "type") {
      node.setAttribute(key, value);
    } else node[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
  }
  return node;
}

const fmt = (x) => Number(x).toFixed(3);

function bars(items) {  // [{label, score}] -> score bars, widest first as given
  return el("div", { class: "bars" }, ...items.map(({ label, score }) =>
    el("div", { class: "bar", "data-label": label, "data-score": String(score) },
      el("span", { class: "bar-label", text: label }),
      el("span", { class: "bar-track" },
        el("span", { class: "bar-fill", style: `width: ${(100 * score).toFixed(1)}%` })),
      el("span", { class: "bar-score", text: fmt(score) }))));
}

// text with [start, end) spans wrapped by make(piece, span); the gaps stay plain text
function spans(text, items, make) {
  const out = el("div", { class: "spans" });
  let at = 0;
  for (const item of [...items].sort((a, b) => a.start - b.start)) {
    if (item.start < at) continue;  // overlapping: keep the first
    out.append(text.slice(at, item.start), make(text.slice(item.start, item.end), item));
    at = item.end;
  }
  out.append(text.slice(at));
  return out;
}

// -- one renderer per task: inputs -> request, response -> DOM --------------------------
const TASKS = {
  "fill-mask": {
    fields: [["text", "input", "Text with [MASK]"]],
    request: (v) => ["/fill-mask", { inputs: v.text, top_k: 5 }],
    render(result) {
      const groups = Array.isArray(result[0]) ? result : [result];  // one list per [MASK]
      return el("div", {}, ...groups.map((group, i) => el("div", {},
        groups.length > 1 ? el("h4", { text: `[MASK] ${i + 1}` }) : null,
        bars(group.map((c) => ({ label: c.token_str, score: c.score }))))));
    },
  },
  "text-classification": {
    fields: [["text", "textarea", "Text"]],
    request: (v) => ["/predict", { inputs: v.text, top_k: null }],
    render: (result) => bars(result.map((c) => ({ label: c.label, score: c.score }))),
  },
  "token-classification": {
    fields: [["text", "textarea", "Text"]],
    request: (v) => ["/ner", { inputs: v.text, aggregation_strategy: "simple" }],
    render(result, v) {
      if (!result.length) return el("p", { class: "muted", text: "No entities found." });
      return spans(v.text, result, (piece, e) => el("mark", {
        class: "entity", "data-type": e.entity_group || e.entity,
        title: `${e.entity_group || e.entity} ${fmt(e.score)}`, text: piece,
      }));
    },
  },
  "question-answering": {
    fields: [["question", "input", "Question"], ["context", "textarea", "Context"]],
    request: (v) => ["/qa", { question: v.question, context: v.context }],
    render: (result, v) => el("div", {},
      el("p", {}, "Answer: ", el("strong", { text: result.answer }),
        el("span", { class: "muted", text: ` (score ${fmt(result.score)})` })),
      spans(v.context, [result], (piece) => el("mark", {
        class: "answer", "data-score": String(result.score), text: piece }))),
  },
  "replaced-token-detection": {
    fields: [["text", "textarea", "Text"]],
    request: (v) => ["/rtd", { inputs: v.text }],
    render: (result, v) => el("div", {},
      spans(v.text, result, (piece, t) => el("span", {
        class: t.replaced ? "rtd-token replaced" : "rtd-token",
        "data-prob": String(t.score), title: `P(replaced) = ${fmt(t.score)}`,
        style: `background: rgba(220, 38, 38, ${(0.75 * t.score).toFixed(3)})`, text: piece,
      })),
      el("p", { class: "muted", text: "Shade: probability that the token was replaced." })),
  },
  "feature-extraction": {
    fields: [["text", "input", "Sentence 1"], ["text2", "input", "Sentence 2"]],
    request: (v) => ["/embed", { inputs: [v.text, v.text2], normalize: true }],
    render([a, b]) {
      let dot = 0, na = 0, nb = 0;
      a.forEach((x, i) => { dot += x * b[i]; na += x * x; nb += b[i] * b[i]; });
      const cosine = dot / Math.sqrt(na * nb);
      return el("p", {}, "Cosine similarity: ",
        el("strong", { class: "similarity", "data-similarity": String(cosine),
                       text: fmt(cosine) }));
    },
  },
};

function card(model) {
  const task = TASKS[model.task];
  const example = EXAMPLES[model.task] || {};
  const meta = [model.task, model.backend, model.dtype].filter(Boolean).join(" · ");
  const root = el("section", { class: "card", "data-task": model.task,
                               "data-model": model.name },
    el("h2", { text: model.name }), el("p", { class: "meta", text: meta }));
  if (!task) {
    root.append(el("p", { class: "muted", text: "No widget for this task." }));
    return root;
  }
  const inputs = {};
  for (const [name, kind, label] of task.fields) {
    inputs[name] = el(kind, { name, value: example[name] || "", placeholder: label });
    if (kind === "textarea") inputs[name].rows = 2;
    root.append(el("label", { class: "field" }, el("span", { text: label }), inputs[name]));
  }
  const button = el("button", { type: "button", class: "compute", text: "Compute" });
  const status = el("span", { class: "status muted" });
  const result = el("div", { class: "result" });
  const raw = el("pre", { class: "raw-json" });
  const details = el("details", { hidden: true }, el("summary", { text: "JSON output" }), raw);
  root.append(el("div", { class: "actions" }, button, status), result, details);

  async function compute() {
    const values = Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, v.value]));
    const [path, body] = task.request(values);
    body.model = model.name;
    button.disabled = true;
    status.textContent = "Computing…";
    result.replaceChildren();
    root.removeAttribute("data-state");
    const started = performance.now();
    try {
      const data = await api("POST", path, body);
      status.textContent = `${Math.round(performance.now() - started)} ms`;
      result.append(task.render(data, values));
      raw.textContent = JSON.stringify(data, null, 2);
      root.dataset.state = "done";
    } catch (error) {
      status.textContent = "";
      result.append(el("p", { class: "error",
        text: `${error.errorType || error.name}: ${error.message}` }));
      raw.textContent = JSON.stringify(error.body || { error: String(error) }, null, 2);
      root.dataset.state = "error";
      if (error.status === 401) showAuth("The API key was refused.");
    } finally {
      button.disabled = false;
      details.hidden = false;
    }
  }
  button.addEventListener("click", compute);
  for (const input of Object.values(inputs)) {
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (input.tagName === "INPUT" || event.ctrlKey)) {
        event.preventDefault();
        compute();
      }
    });
  }
  return root;
}

function showAuth(message) {
  document.getElementById("auth").hidden = false;
  const error = document.getElementById("auth-error");
  error.textContent = message || "";
  error.hidden = !message;
}

async function load() {
  const server = document.getElementById("server");
  const models = document.getElementById("models");
  try {
    const info = await api("GET", "/info");
    document.getElementById("auth").hidden = true;
    server.textContent = `zhplm ${info.version} · ${info.models.length} model(s)`;
    models.replaceChildren(...info.models.map(card));
    document.body.dataset.ready = "true";
  } catch (error) {
    if (error.status === 401) {
      server.textContent = "Unauthorized: enter the server's API key.";
      showAuth(apiKey ? "The API key was refused." : "");
    } else {
      server.replaceChildren(el("span", { class: "error",
        text: `${error.errorType || error.name}: ${error.message}` }));
    }
  }
}

document.getElementById("auth").addEventListener("submit", (event) => {
  event.preventDefault();
  apiKey = document.getElementById("api-key").value.trim();
  sessionStorage.setItem("zhplm-api-key", apiKey);
  load();
});

load();
