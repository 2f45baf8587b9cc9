// glmrun report: the runs table (sort, filter, search), one conversation at a time, models
// side by side. Data comes from the page's JSON blocks; text is only ever set as text
// (textContent, text nodes), never parsed as HTML.
(function () {
  "use strict";
  var PAGE = 200;
  var RANK = { error: 0, failed: 1, not_run: 2, passed: 3 };
  var byId = function (id) { return document.getElementById(id); };

  function h(tag, attrs) {
    var el = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false) return;
        if (k === "class") el.className = v;
        else if (k === "text") el.textContent = String(v);
        else if (k.slice(0, 2) === "on") el.addEventListener(k.slice(2), v);
        else el.setAttribute(k, v === true ? "" : String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) add(el, arguments[i]);
    return el;
  }
  function add(el, kid) {
    if (kid === null || kid === undefined || kid === false) return;
    if (Array.isArray(kid)) { kid.forEach(function (k) { add(el, k); }); return; }
    el.appendChild(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  function ms(v) {
    if (v === null || v === undefined) return "–";
    return v < 1000 ? Math.round(v) + " ms" : (v / 1000).toFixed(2) + " s";
  }
  function yuan(v) { return "¥" + v.toFixed(6).replace(/0+$/, "").replace(/\.$/, ""); }
  function num(v) { return v === null || v === undefined ? "–" : Number(v).toLocaleString("en"); }
  function badge(status) { return h("span", { class: "badge " + status, text: status.replace("_", " ") }); }
  function json(v) { return JSON.stringify(v, null, 2); }
  function textOf(content) {
    if (content === null || content === undefined) return "";
    if (typeof content === "string") return content;
    if (Array.isArray(content)) {
      return content.filter(function (p) { return p && p.type === "text"; })
        .map(function (p) { return String(p.text || ""); }).join("");
    }
    return String(content);
  }

  // --- data ---------------------------------------------------------------------------------
  var data = JSON.parse(byId("glmrun-data").textContent);
  var C = {};
  data.columns.forEach(function (c, i) { C[c] = i; });
  var rows = data.rows.map(function (r, i) {
    var o = { n: i };
    data.columns.forEach(function (c) { o[c] = r[C[c]]; });
    o.hay = [o.id, o.status, o.conversation, o.case || "", o.model, o.failures.join("\n"),
      o.reply, o.file].join("\n").toLowerCase();
    return o;
  });
  var rowById = new Map(rows.map(function (r) { return [r.id, r]; }));
  var parsed = new Map();
  function transcript(row) {
    if (row.transcript === null || row.transcript === undefined) return null;
    if (!parsed.has(row.transcript)) {
      parsed.set(row.transcript, JSON.parse(byId("t" + row.transcript).textContent));
    }
    return parsed.get(row.transcript);
  }

  // --- theme --------------------------------------------------------------------------------
  var root = document.documentElement;
  try {
    var saved = window.localStorage.getItem("glmrun-theme");
    if (saved) root.setAttribute("data-theme", saved);
  } catch (e) { /* storage may be off for file: pages */ }
  byId("theme").addEventListener("click", function () {
    var dark = root.getAttribute("data-theme") ? root.getAttribute("data-theme") === "dark"
      : window.matchMedia("(prefers-color-scheme: dark)").matches;
    root.setAttribute("data-theme", dark ? "light" : "dark");
    try { window.localStorage.setItem("glmrun-theme", dark ? "light" : "dark"); } catch (e) { /* */ }
  });

  // --- the table ----------------------------------------------------------------------------
  var state = { q: "", statuses: new Set(["passed", "failed", "error", "not_run"]), model: "",
    key: "status", dir: 1, shown: PAGE };
  var filtered = [];
  var tbody = document.querySelector("#runs tbody");

  function compare(a, b) {
    var k = state.key, x = a[k], y = b[k];
    if (k === "status") { x = RANK[x]; y = RANK[y]; }
    if (k === "failures") { x = a.failures.length; y = b.failures.length; }
    if (x === y) return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    return (x < y ? -1 : 1) * state.dir;
  }
  var ordered = rows.slice().sort(compare);  // re-sorted only when the order changes
  function applyFilter() {
    var terms = state.q.toLowerCase().split(/\s+/).filter(Boolean);
    filtered = ordered.filter(function (r) {
      if (!state.statuses.has(r.status)) return false;
      if (state.model && r.model !== state.model) return false;
      for (var i = 0; i < terms.length; i++) if (r.hay.indexOf(terms[i]) < 0) return false;
      return true;
    });
    state.shown = PAGE;
    renderRows();
    byId("runs").setAttribute("data-query", state.q);  // what the rows now show (for tests)
    renderMatrixIfOpen();
  }
  function rowEl(r) {
    var why = r.failures.length
      ? h("td", { class: "why", title: r.failures.join("\n") }, h("span", { class: "f", text: r.failures[0] }),
        r.failures.length > 1 ? " +" + (r.failures.length - 1) : null)
      : h("td", { class: "why", title: r.reply.slice(0, 2000), text: r.reply.replace(/\s+/g, " ").slice(0, 200) });
    var tr = h("tr", { "data-id": r.id, "data-status": r.status },
      h("td", null, badge(r.status)),
      h("td", { class: "id", title: r.id }, h("a", { href: "#run=" + encodeURIComponent(r.id), text: r.id })),
      h("td", { title: r.conversation, text: r.conversation }),
      h("td", { title: r.case || "", text: r.case || "–" }),
      h("td", { title: r.model, text: r.model }),
      h("td", { class: "num", text: num(r.tokens) }),
      h("td", { class: "num", text: ms(r.latency_ms) }),
      why);
    return tr;
  }
  function renderRows() {
    var frag = document.createDocumentFragment();
    var upto = Math.min(state.shown, filtered.length);
    for (var i = 0; i < upto; i++) frag.appendChild(rowEl(filtered[i]));
    if (!filtered.length) {
      frag.appendChild(h("tr", null, h("td", { colspan: 8, class: "empty", text: "No run matches." })));
    }
    tbody.replaceChildren(frag);
    byId("count").textContent = filtered.length === rows.length
      ? num(rows.length) + " runs" : num(filtered.length) + " of " + num(rows.length) + " runs";
    var more = byId("more");
    var left = filtered.length - upto;
    more.hidden = left <= 0;
    more.textContent = "Show " + num(Math.min(PAGE, left)) + " more (" + num(left) + " left)";
  }
  byId("more").addEventListener("click", function () { state.shown += PAGE; renderRows(); });
  tbody.addEventListener("click", function (ev) {
    var tr = ev.target.closest("tr[data-id]");
    if (tr && !ev.target.closest("a")) location.hash = "run=" + encodeURIComponent(tr.getAttribute("data-id"));
  });
  document.querySelectorAll("#runs th.sortable").forEach(function (th) {
    th.addEventListener("click", function () {
      var key = th.getAttribute("data-key");
      state.dir = state.key === key ? -state.dir : (key === "tokens" || key === "latency_ms" ? -1 : 1);
      state.key = key;
      document.querySelectorAll("#runs th").forEach(function (o) { o.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending");
      ordered.sort(compare);
      applyFilter();
    });
  });
  var timer = null;
  byId("q").addEventListener("input", function (ev) {
    clearTimeout(timer);
    timer = setTimeout(function () { state.q = ev.target.value; applyFilter(); }, 80);
  });
  byId("chips").addEventListener("change", function (ev) {
    if (ev.target.checked) state.statuses.add(ev.target.value);
    else state.statuses.delete(ev.target.value);
    applyFilter();
  });
  if (byId("model")) {
    byId("model").addEventListener("change", function (ev) { state.model = ev.target.value; applyFilter(); });
  }
  document.addEventListener("keydown", function (ev) {
    if (ev.key === "/" && document.activeElement !== byId("q")) { ev.preventDefault(); byId("q").focus(); }
    if (ev.key === "Escape" && location.hash) location.hash = "";
  });

  // --- one conversation ---------------------------------------------------------------------
  function errorLine(e) {
    var bits = [String(e.kind || "error")];
    if (e.status !== null && e.status !== undefined) bits.push("HTTP " + e.status);
    if (e.code !== null && e.code !== undefined) bits.push("code " + e.code);
    return bits.join(" · ");
  }
  function usageText(u) {
    if (!u) return "–";
    var s = num(u.total_tokens) + " (" + num(u.prompt_tokens) + " in + " + num(u.completion_tokens) + " out)";
    var extra = [];
    (function walk(obj, prefix) {
      Object.keys(obj).forEach(function (k) {
        if (!prefix && (k === "prompt_tokens" || k === "completion_tokens" || k === "total_tokens")) return;
        var v = obj[k];
        if (v && typeof v === "object") walk(v, k + ".");
        else if (v) extra.push(k.replace(/_tokens$/, "") + " " + num(v));  // cached, reasoning
      });
    })(u, "");
    return extra.length ? s + " · " + extra.join(" · ") : s;
  }
  function contentEl(content) {
    if (content === null || content === undefined) return null;
    if (typeof content === "string") return content ? h("div", { class: "text", text: content }) : null;
    if (!Array.isArray(content)) return h("div", { class: "text", text: String(content) });
    return content.map(function (part) {
      if (part && part.type === "text") return h("div", { class: "text", text: String(part.text || "") });
      var url = part && part.image_url && (typeof part.image_url === "string" ? part.image_url : part.image_url.url);
      if (typeof url === "string" && /^data:image\/(png|jpe?g|gif|webp);base64,/i.test(url)) {
        return h("img", { src: url, alt: "image", loading: "lazy" });
      }
      var mime = typeof url === "string" && bareImage(url);
      if (mime) return h("img", { src: "data:" + mime + ";base64," + url, alt: "image", loading: "lazy" });
      if (typeof url === "string") {  // not fetched: the report makes no requests
        return h("div", { class: "text" }, "image: ", /^https?:\/\//i.test(url)
          ? h("a", { href: url, rel: "noreferrer noopener", target: "_blank", text: url }) : url);
      }
      return h("pre", { class: "json", text: json(part) });
    });
  }
  // Zhipu takes an inline image as bare base64 (what glmrun sends): its first bytes say which.
  var MAGIC = [["iVBORw0KGgo", "image/png"], ["/9j/", "image/jpeg"], ["R0lGOD", "image/gif"],
    ["UklGR", "image/webp"]];
  function bareImage(text) {
    if (!/^[A-Za-z0-9+\/]+={0,2}$/.test(text)) return null;
    for (var i = 0; i < MAGIC.length; i++) if (text.slice(0, MAGIC[i][0].length) === MAGIC[i][0]) return MAGIC[i][1];
    return null;
  }
  function argsText(raw) {
    try { return json(JSON.parse(raw)); } catch (e) { return String(raw); }
  }
  function callMetrics(c) {
    var bits = ["turn " + c.turn, "round " + c.round];
    if (c.usage) bits.push(num(c.usage.total_tokens) + " tokens");
    bits.push(ms(c.latency_ms));
    if (c.ttft_ms !== null && c.ttft_ms !== undefined) bits.push("first token " + ms(c.ttft_ms));
    if (c.chunks !== null && c.chunks !== undefined) bits.push(c.chunks + " chunks");
    if (c.polls !== null && c.polls !== undefined) bits.push(c.polls + " polls");
    if (c.finish_reason) bits.push("finish " + c.finish_reason);
    if (c.cached) bits.push("cached");
    if (c.retries && c.retries.length) bits.push(c.retries.length + (c.retries.length > 1 ? " retries" : " retry"));
    if (typeof c.cost === "number") bits.push(yuan(c.cost));
    return h("div", { class: "metrics" }, bits.map(function (b) { return h("span", { text: b }); }));
  }
  function messagesEl(t) {
    var results = new Map((t.tool_results || []).map(function (r) { return [r.id, r]; }));
    var ok = (t.calls || []).filter(function (c) { return !c.error; });
    var assistants = (t.messages || []).filter(function (m) { return m.role === "assistant"; });
    var offset = assistants.length - ok.length;  // few-shot assistant messages come first
    var seen = 0;
    return h("div", { class: "chat" }, (t.messages || []).map(function (m) {
      var who = h("div", { class: "who" }, m.role);
      var el = h("div", { class: "msg " + m.role }, who);
      if (m.role === "tool") {
        var r = results.get(m.tool_call_id);
        if (r) add(who, h("span", { class: "mono", text: r.name }));
        add(who, h("span", { class: "mono", text: m.tool_call_id || "" }));
        if (r) add(who, h("span", { text: ms(r.duration_ms) }));
        if (r && r.error) add(el, h("div", { class: "text toolerr", text: "error: " + r.error }));
      }
      if (m.reasoning_content) {
        add(el, h("details", { class: "reasoning" },
          h("summary", { text: "Reasoning · " + num(m.reasoning_content.length) + " characters" }),
          h("div", { class: "text", text: m.reasoning_content })));
      }
      add(el, contentEl(m.content));
      (m.tool_calls || []).forEach(function (call) {
        var f = call.function || {};
        add(el, h("div", { class: "toolcall" },
          h("span", { class: "fn", text: f.name || "" }), " ",
          h("span", { class: "mono", text: call.id || "" }),
          h("pre", { class: "json", text: argsText(f.arguments) })));
      });
      if (m.role === "assistant") {
        var i = seen++ - offset;
        if (i >= 0 && i < ok.length) add(el, callMetrics(ok[i]));
      }
      return el;
    }));
  }
  function diffEl(text) {
    return h("pre", { class: "diff" }, String(text).split("\n").map(function (line) {
      var cls = line.slice(0, 3) === "+++" || line.slice(0, 3) === "---" ? "hunk"
        : line[0] === "+" ? "add" : line[0] === "-" ? "del" : line.slice(0, 2) === "@@" ? "hunk" : null;
      return h("span", { class: cls, text: line + "\n" });
    }));
  }
  function expectationsEl(t) {
    var list = t.expectations || [];
    if (!list.length) return null;
    var passed = list.filter(function (e) { return e.passed; }).length;
    return [h("h3", { text: "Expectations · " + passed + " of " + list.length + " passed" }),
      h("ul", { class: "checks" }, list.map(function (e) {
        return h("li", { class: e.passed ? "ok" : "ko" },
          h("span", { class: "mark", text: e.passed ? "✓" : "✗" }),
          h("span", { class: "kind", text: e.kind }),
          e.name ? [" ", h("code", { text: e.name })] : null,
          e.turn !== null && e.turn !== undefined ? " · turn " + e.turn : null,
          " — ", h("span", { class: "reason", text: e.reason }),
          !e.passed && e.diff ? diffEl(e.diff) : null);
      }))];
  }
  function callsEl(t) {
    var calls = t.calls || [];
    if (!calls.length) return null;
    var retries = [];
    var table = h("table", null, h("thead", null, h("tr", null,
      ["#", "Turn", "Round", "Endpoint", "Finish", "Tokens", "Latency", "First token", "Request", "Notes"]
        .map(function (x) { return h("th", { text: x }); }))),
    h("tbody", null, calls.map(function (c, n) {
      (c.retries || []).forEach(function (r) {
        retries.push("call " + (n + 1) + ", attempt " + r.attempt + ": " + errorLine(r.error || {}) + ": "
          + ((r.error || {}).message || "") + " (waited " + ms(r.wait_ms) + ")");
      });
      var notes = [];
      if (c.cached) notes.push("cached");
      if (c.chunks !== null && c.chunks !== undefined) notes.push(c.chunks + " chunks");
      if (c.task_id) notes.push("task " + c.task_id);
      if (c.polls !== null && c.polls !== undefined) notes.push(c.polls + " polls");
      if (c.queue_ms !== null && c.queue_ms !== undefined) notes.push("queued " + ms(c.queue_ms));
      if (c.retries && c.retries.length) notes.push(c.retries.length + (c.retries.length > 1 ? " retries" : " retry"));
      if (c.error) notes.push(errorLine(c.error) + ": " + c.error.message);
      return h("tr", null,
        h("td", { text: n + 1 }), h("td", { text: c.turn }), h("td", { text: c.round }),
        h("td", { text: c.endpoint }), h("td", { text: c.finish_reason || "–" }),
        h("td", { text: usageText(c.usage) }), h("td", { class: "num", text: ms(c.latency_ms) }),
        h("td", { class: "num", text: ms(c.ttft_ms) }), h("td", { class: "mono", text: c.request_id || "–" }),
        h("td", { class: "notes", text: notes.join(", ") }));
    })));
    return [h("h3", { text: "Calls · " + calls.length }), h("div", { class: "calls" }, table),
      retries.length ? h("ul", { class: "retries" }, retries.map(function (r) { return h("li", { text: r }); })) : null];
  }
  function siblings(row) {
    return rows.filter(function (o) {
      return o.conversation === row.conversation && o.case === row.case && o.file === row.file && o.model !== row.model;
    });
  }
  function sideEl(list) {
    return h("div", { class: "side" }, list.map(function (o) {
      return h("div", null,
        h("div", { class: "hd" }, badge(o.status), h("span", { class: "mono", text: o.model }),
          h("a", { href: "#run=" + encodeURIComponent(o.id), text: "open" }),
          h("span", { class: "reason", text: num(o.tokens) + " tokens · " + ms(o.latency_ms) })),
        o.failures.length ? h("div", { class: "toolerr", text: o.failures.join("\n") }) : null,
        h("div", { class: "text", text: finalReply(o) }));
    }));
  }
  function finalReply(o) {
    var t = transcript(o);
    if (!t) return "(no transcript)";
    var msgs = t.messages || [];
    for (var i = msgs.length - 1; i >= 0; i--) if (msgs[i].role === "assistant") return textOf(msgs[i].content);
    return "(no reply)";
  }
  function show(view) {  // replace a view's content with the nodes (or arrays of them) given
    view.replaceChildren();
    add(view, Array.prototype.slice.call(arguments, 1));
  }
  function fact(k, v) { return h("div", null, h("dt", { text: k }), h("dd", null, v)); }
  function renderDetail(id) {
    var view = byId("detail-view");
    var row = rowById.get(id);
    var back = h("a", { class: "back", href: "#" }, "← All runs");
    if (!row) { show(view, back, h("p", { class: "empty", text: "No run " + id + " in this report." })); return; }
    var t = transcript(row);
    if (!t) {
      show(view, back, h("div", { class: "d-head" },
        h("h2", null, badge(row.status), row.id),
        h("p", { class: "desc", text: row.failures.join("\n") || "This run has no transcript." })));
      return;
    }
    var src = t.source || {};
    var calls = t.calls || [];
    var facts = h("dl", { class: "facts" },
      fact("Run", h("code", { text: t.id })), fact("Model", h("code", { text: t.model })),
      fact("Mode", t.mode), fact("Source", h("code", { text: src.file + (src.line ? ":" + src.line : "") })),
      t.case ? fact("Case", "#" + (t.case.index + 1) + " " + JSON.stringify(t.case.vars)) : null,
      t.repeat ? fact("Repeat", (t.repeat.index + 1) + " of " + t.repeat.of) : null,
      t.tags && t.tags.length ? fact("Tags", t.tags.join(", ")) : null,
      fact("Tokens", usageText(t.usage)),
      fact("Latency", ms(calls.reduce(function (s, c) { return s + (c.latency_ms || 0); }, 0)) + " in " + calls.length + (calls.length === 1 ? " call" : " calls")),
      fact("Duration", ms(t.duration_ms)), fact("Started", t.started_at),
      typeof row.cost === "number" ? fact("Cost", yuan(row.cost)) : null);
    var head = h("div", { class: "d-head" }, h("h2", null, badge(t.status), t.name),
      t.description ? h("p", { class: "desc", text: t.description }) : null, facts,
      t.error ? h("div", { class: "errbox" }, h("b", { text: errorLine(t.error) }), ": ", t.error.message) : null);
    var others = siblings(row);
    show(view, back, head,
      h("h3", { text: "Conversation" }), messagesEl(t),
      expectationsEl(t), callsEl(t),
      others.length ? [h("h3", { text: "Other models, same case" }), sideEl([row].concat(others))] : null,
      h("details", { class: "raw" }, h("summary", { text: "Parameters and variables" }),
        h("pre", { text: json({ params: t.params, variables: t.variables }) })));
  }

  // --- models side by side --------------------------------------------------------------------
  var matrixShown = 50;
  function renderMatrixIfOpen() { if (!byId("matrix-view").hidden) renderMatrix(); }
  function renderMatrix() {
    var groups = new Map();
    filtered.forEach(function (r) {
      var key = r.file + "\u0000" + r.conversation + "\u0000" + (r.case || "");
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(r);
    });
    var list = Array.from(groups.values()).filter(function (g) { return g.length > 1; });
    var view = byId("matrix-view");
    var out = list.slice(0, matrixShown).map(function (g) {
      g.sort(function (a, b) { return a.model < b.model ? -1 : a.model > b.model ? 1 : 0; });
      return h("div", { class: "group" },
        h("h4", null, g[0].conversation, g[0].case ? h("span", { text: " · " + g[0].case }) : null), sideEl(g));
    });
    var more = list.length > matrixShown
      ? h("p", { class: "more" }, h("button", { type: "button", onclick: function () { matrixShown += 50; renderMatrix(); },
        text: "Show more (" + num(list.length - matrixShown) + " left)" })) : null;
    show(view, list.length ? out : h("p", { class: "empty", text: "No case ran on more than one model." }), more);
  }

  // --- views ------------------------------------------------------------------------------
  function route() {
    var hash = decodeURIComponent(location.hash.slice(1));
    var view = hash.slice(0, 4) === "run=" ? "detail" : hash === "matrix" ? "matrix" : "list";
    byId("list-view").hidden = view !== "list";
    byId("detail-view").hidden = view !== "detail";
    byId("matrix-view").hidden = view !== "matrix";
    document.querySelectorAll("#tabs a").forEach(function (a) {
      a.classList.toggle("on", a.getAttribute("data-view") === (view === "detail" ? "list" : view));
    });
    if (view === "detail") { renderDetail(hash.slice(4)); window.scrollTo(0, byId("tabs").offsetTop); }
    if (view === "matrix") renderMatrix();
  }
  window.addEventListener("hashchange", route);
  applyFilter();
  route();
  document.body.setAttribute("data-ready", "true");
})();
