// The review page: notes, the model's codes, their evidence, the coder's decisions.
// Every text from a note or the server goes into the page as text (textContent), never as HTML.
"use strict";

const state = {
  notes: [],          // [{id, reviewed}] of the server's notes folder
  noteIndex: -1,      // the current note in `notes`, -1 for a pasted note
  noteId: null,       // null: a pasted note (the server names it)
  text: "",
  translation: null,  // the note's translation, for an export that reads one (info.reads_translation)
  readsTranslation: false,
  result: null,       // /api/code's answer for `text`
  decisions: new Map(),  // code -> "accepted" | "rejected" (suggestions and near misses)
  added: [],          // [{code, description, in_label_space}] from the search
  selected: 0,        // index into shownCodes()
};

const $ = (id) => document.getElementById(id);

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setStatus(message, isError) {
  $("status").textContent = message;
  $("status").classList.toggle("error", Boolean(isError));
}

// The server's launch secret, written into this page when it served it: the API answers
// only requests that carry it, which no page of another site can read.
const SECRET = document.querySelector('meta[name="review-secret"]').content;

async function api(path, body) {
  const headers = {"X-Review-Secret": SECRET};
  const options = body === undefined ? {headers} : {
    method: "POST", headers: {...headers, "Content-Type": "application/json"}, body: JSON.stringify(body)};
  const response = await fetch(path, options);
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || `${path}: HTTP ${response.status}`);
  return answer;
}

function shownCodes() {
  if (!state.result) return [];
  return [...state.result.codes.map((c) => ({...c, near: false})),
          ...state.result.near_misses.map((c) => ({...c, near: true}))];
}

// ---- notes ----

async function loadNotes() {
  state.notes = await api("/api/notes");
  renderNotes();
}

function renderNotes() {
  const list = $("notes");
  list.replaceChildren();
  state.notes.forEach((note, index) => {
    const item = element("li", note.reviewed ? "reviewed" : "", note.id);
    item.dataset.note = note.id;
    if (index === state.noteIndex) item.classList.add("current");
    item.addEventListener("click", () => openNote(index));
    list.append(item);
  });
}

async function openNote(index) {
  if (index < 0 || index >= state.notes.length) return;
  try {
    const note = await api(`/api/notes/${encodeURIComponent(state.notes[index].id)}`);
    state.noteIndex = index;
    await codeNote(note.id, note.text, note.translation ?? null);
  } catch (error) {
    setStatus(error.message, true);
  }
  renderNotes();
}

async function codeNote(noteId, text, translation) {
  setStatus("Coding…");
  const started = performance.now();
  const result = await api("/api/code", translation === null ? {text} : {text, translation});
  Object.assign(state, {noteId, text, translation, result, decisions: new Map(), added: [], selected: 0});
  render();
  const seconds = (performance.now() - started) / 1000;
  document.body.dataset.codedIn = String(seconds);
  setStatus(`${result.codes.length} codes in ${seconds.toFixed(2)} s`);
}

async function codePasted() {
  const text = $("paste").value;
  state.noteIndex = -1;
  renderNotes();
  try {
    await codeNote(null, text, pastedTranslation());
  } catch (error) {
    setStatus(error.message, true);
  }
}

function pastedTranslation() {
  return state.readsTranslation ? $("paste-translation").value : null;
}

async function dropFile(event) {
  event.preventDefault();
  $("paste").classList.remove("dragging");
  const file = event.dataTransfer.files[0];
  if (!file) return;
  try {
    const text = new TextDecoder("utf-8", {fatal: true}).decode(await file.arrayBuffer());
    $("paste").value = text;
    state.noteIndex = -1;
    renderNotes();
    await codeNote(file.name, text, pastedTranslation());
  } catch (error) {
    setStatus(error instanceof TypeError ? `${file.name} is not valid UTF-8` : error.message, true);
  }
}

// ---- codes ----

function codeItem(code, index) {
  const item = element("li", code.near ? "near" : "");
  item.dataset.code = code.code;
  const decision = state.decisions.get(code.code);
  if (decision) item.classList.add(decision);
  if (index === state.selected) item.classList.add("selected");
  item.append(element("span", "code", code.code), element("span", "description", code.description));
  const bar = element("span", "bar");
  const filled = element("span");
  filled.style.width = `${(100 * code.probability).toFixed(1)}%`;
  bar.append(filled);
  item.append(bar, element("span", "probability", code.probability.toFixed(3)));
  const actions = element("span", "actions");
  for (const [label, value] of [["accept", "accepted"], ["reject", "rejected"]]) {
    const button = element("button", label, label);
    button.type = "button";
    button.addEventListener("click", (event) => {
      event.stopPropagation();
      select(index);
      decide(value);
    });
    actions.append(button);
  }
  item.append(actions);
  item.addEventListener("click", () => select(index));
  return item;
}

function render() {
  const result = state.result;
  $("threshold").textContent = result ? `(probability ≥ ${result.threshold.toFixed(3)})` : "";
  $("note-title").textContent = state.noteId || "Pasted note";
  const codes = shownCodes();
  $("codes").replaceChildren(...codes.filter((c) => !c.near).map((c) => codeItem(c, codes.indexOf(c))));
  $("near-misses").replaceChildren(...codes.filter((c) => c.near).map((c) => codeItem(c, codes.indexOf(c))));
  $("added").replaceChildren(...state.added.map((entry) => {
    const item = element("li");
    item.dataset.code = entry.code;
    item.append(element("span", "code", entry.code), element("span", "description", entry.description));
    if (!entry.in_label_space) item.append(element("span", "outside", "outside the model's codes"));
    return item;
  }));
  $("save").disabled = !result;
  renderText();
}

function select(index) {
  const count = shownCodes().length;
  if (count === 0) return;
  state.selected = Math.max(0, Math.min(count - 1, index));
  render();
}

function decide(value) {
  const code = shownCodes()[state.selected];
  if (!code) return;
  if (value === null) state.decisions.delete(code.code);
  else state.decisions.set(code.code, value);
  render();
}

// ---- evidence ----

// The note, and the translation the model read (when it reads one), each with the selected
// code's evidence that lies in it marked.
function renderText() {
  const hasTranslation = state.translation !== null;
  $("translation-title").hidden = $("translation-text").hidden = !hasTranslation;
  const first = renderMarked($("note-text"), state.text, "text");
  const second = hasTranslation ? renderMarked($("translation-text"), state.translation, "translation") : null;
  (first || second)?.scrollIntoView({block: "center"});
}

// Marks `within`'s evidence in `text` inside `box`; returns the strongest span's first mark.
function renderMarked(box, text, within) {
  const chars = Array.from(text);  // evidence offsets count code points
  const codes = shownCodes();
  const code = codes[state.selected];
  const spans = code ? code.evidence.filter((s) => s.within === within) : [];
  const cuts = new Set([0, chars.length]);
  for (const span of spans) { cuts.add(span.start); cuts.add(span.end); }
  const points = [...cuts].sort((a, b) => a - b);
  const strongest = Math.max(0, ...spans.map((s) => s.weight));
  const pieces = [];
  let first = null;  // the strongest span's first piece, scrolled into view
  for (let i = 0; i + 1 < points.length; i++) {
    const [start, end] = [points[i], points[i + 1]];
    const text = chars.slice(start, end).join("");
    const covering = spans.filter((s) => s.start <= start && end <= s.end);
    if (covering.length === 0) { pieces.push(document.createTextNode(text)); continue; }
    const weight = Math.max(...covering.map((s) => s.weight));
    const mark = element("mark", "evidence", text);
    mark.style.setProperty("--weight", (0.25 + 0.75 * weight / (strongest || 1)).toFixed(3));
    mark.dataset.start = String(start);
    mark.title = supportingCodes(codes, within, start, end);
    if (weight === strongest) {
      mark.classList.add("strongest");
      first = first || mark;
    }
    pieces.push(mark);
  }
  box.replaceChildren(...pieces);
  return first;
}

function supportingCodes(codes, within, start, end) {
  return codes.filter((c) => c.evidence.some((s) => s.within === within && s.start < end && start < s.end))
    .map((c) => `${c.code} ${c.description}`).join("\n");
}

// ---- adding codes ----

let searchTimer = null;
let searchResults = [];
let searchActive = 0;

function search() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(async () => {
    const query = $("search").value;
    try {
      searchResults = query.trim() ? await api(`/api/search?q=${encodeURIComponent(query)}`) : [];
    } catch (error) {
      setStatus(error.message, true);
      searchResults = [];
    }
    searchActive = 0;
    renderSearch();
  }, 120);
}

function renderSearch() {
  $("search-results").replaceChildren(...searchResults.map((entry, index) => {
    const item = element("li", index === searchActive ? "active" : "");
    item.dataset.code = entry.code;
    item.append(element("span", "code", entry.code), document.createTextNode(" " + entry.description));
    if (!entry.in_label_space) item.append(element("span", "outside", " (outside the model's codes)"));
    item.addEventListener("click", () => addCode(entry));
    return item;
  }));
}

function addCode(entry) {
  const shown = shownCodes().find((c) => c.code === entry.code);
  if (shown) {
    select(shownCodes().indexOf(shown));
    decide("accepted");
  } else if (!state.added.some((a) => a.code === entry.code)) {
    state.added.push(entry);
  }
  $("search").value = "";
  searchResults = [];
  renderSearch();
  render();
}

// ---- saving ----

async function save() {
  if (!state.result) return;
  const suggested = new Set(state.result.codes.map((c) => c.code));
  const chosen = (value) => [...state.decisions].filter(([, v]) => v === value).map(([code]) => code);
  const review = {
    note_id: state.noteId,
    text: state.text,
    ...(state.translation === null ? {} : {translation: state.translation}),
    accepted: chosen("accepted").filter((c) => suggested.has(c)),
    rejected: chosen("rejected").filter((c) => suggested.has(c)),
    // An accepted near miss is a code the model did not suggest: the coder adds it.
    added: [...chosen("accepted").filter((c) => !suggested.has(c)), ...state.added.map((a) => a.code)],
  };
  try {
    const answer = await api("/api/review", review);
    setStatus(`Saved ${answer.record.note_id}`);
    if (state.noteIndex >= 0) state.notes[state.noteIndex].reviewed = true;
    renderNotes();
  } catch (error) {
    setStatus(error.message, true);
  }
}

// ---- keyboard ----

const KEYS = {
  j: () => select(state.selected + 1), ArrowDown: () => select(state.selected + 1),
  k: () => select(state.selected - 1), ArrowUp: () => select(state.selected - 1),
  a: () => decide("accepted"), r: () => decide("rejected"), u: () => decide(null),
  s: save, n: () => openNote(state.noteIndex + 1), p: () => openNote(state.noteIndex - 1),
  "/": () => $("search").focus(),
};

function onKey(event) {
  const typing = ["INPUT", "TEXTAREA"].includes(document.activeElement.tagName);
  if (typing) {
    if (event.key === "Escape") document.activeElement.blur();
    if (document.activeElement === $("search")) searchKeys(event);
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey || !(event.key in KEYS)) return;
  event.preventDefault();
  KEYS[event.key]();
}

function searchKeys(event) {
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    const step = event.key === "ArrowDown" ? 1 : -1;
    searchActive = Math.max(0, Math.min(searchResults.length - 1, searchActive + step));
    renderSearch();
  } else if (event.key === "Enter" && searchResults[searchActive]) {
    event.preventDefault();
    addCode(searchResults[searchActive]);
  }
}

async function start() {
  $("code-button").addEventListener("click", codePasted);
  $("save").addEventListener("click", save);
  $("search").addEventListener("input", search);
  const paste = $("paste");
  paste.addEventListener("dragover", (event) => { event.preventDefault(); paste.classList.add("dragging"); });
  paste.addEventListener("dragleave", () => paste.classList.remove("dragging"));
  paste.addEventListener("drop", dropFile);
  document.addEventListener("keydown", onKey);
  try {
    const info = await api("/api/info");
    $("model-info").textContent = `${info.num_labels} codes · export ${info.export_fingerprint.split("/")[0]}`;
    state.readsTranslation = Boolean(info.reads_translation);
    $("paste-translation").hidden = !state.readsTranslation;
    await loadNotes();
    if (state.notes.length) await openNote(0);
    else setStatus("Paste or drop a note");
  } catch (error) {
    setStatus(error.message, true);
  }
  document.body.dataset.ready = "true";
}

start();
