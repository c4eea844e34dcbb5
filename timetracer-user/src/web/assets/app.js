// timetracer pages: theme toggle, copy and download buttons, dashboard filters (kept in the URL
// and in localStorage), sorting, keyboard navigation, detail, compare, and (serve) live
// updates, replay, tags and notes. Never builds HTML from strings: text goes through textContent, and the
// only markup inserted comes from the server's templates (parsed with DOMParser, whose
// scripts never run).
"use strict";
(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  // ---- copy buttons (every page) ----
  function copyText(text, btn) {
    const done = () => {
      const old = btn.textContent;
      btn.textContent = "Copied";
      setTimeout(() => { btn.textContent = old; }, 1200);
    };
    const fallback = () => {
      const ta = document.createElement("textarea");
      ta.value = text;
      ta.setAttribute("readonly", "");
      document.body.appendChild(ta);
      ta.select();
      try { document.execCommand("copy"); done(); } catch (e) { /* nothing else to try */ }
      ta.remove();
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, fallback);
    } else {
      fallback();
    }
  }
  document.addEventListener("click", (ev) => {
    const btn = ev.target.closest("button[data-copy]");
    if (!btn) return;
    const src = document.getElementById(btn.getAttribute("data-copy"));
    if (src) copyText(src.textContent, btn);
  });

  // localStorage may be absent or refuse (private windows, file:// policies): never fatal.
  const saved = {
    get(k) { try { return window.localStorage.getItem(k); } catch (e) { return null; } },
    set(k, v) { try { window.localStorage.setItem(k, v); } catch (e) { /* not kept */ } },
  };

  // ---- theme (every page): the system's preference until the toggle chooses ----
  const root = document.documentElement;
  const THEME_KEY = "timetracer.theme";
  const darkQuery = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  const themeBtn = $("#theme");
  const isDark = () => {
    const t = root.getAttribute("data-theme");
    return t ? t === "dark" : !!(darkQuery && darkQuery.matches);
  };
  function showTheme() {
    if (themeBtn) themeBtn.textContent = isDark() ? "Light theme" : "Dark theme";
  }
  const chosenTheme = saved.get(THEME_KEY);
  if (chosenTheme === "dark" || chosenTheme === "light") root.setAttribute("data-theme", chosenTheme);
  showTheme();
  if (darkQuery && darkQuery.addEventListener) darkQuery.addEventListener("change", showTheme);
  if (themeBtn) {
    themeBtn.addEventListener("click", () => {
      const t = isDark() ? "light" : "dark";
      root.setAttribute("data-theme", t);
      saved.set(THEME_KEY, t);
      showTheme();
    });
  }

  // ---- downloads of a static page: the embedded JSON or curl script as a file ----
  document.addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-save]");
    if (!b) return;
    const src = document.getElementById(b.getAttribute("data-save"));
    if (!src) return;
    const blob = new Blob([src.textContent], { type: b.getAttribute("data-type") || "text/plain" });
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = b.getAttribute("data-name") || "download";
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  });

  const tokenMeta = $('meta[name="tt-token"]');
  const token = tokenMeta ? tokenMeta.content : "";
  const onRowsChanged = [];

  // ---- tags and notes (serve: the detail panel and the timeline page) ----
  document.addEventListener("click", async (ev) => {
    const btn = ev.target.closest("button.save-note");
    if (!btn || !token) return;
    const box = btn.closest("section.annotate");
    const status = $(".a-status", box);
    const tagsEl = $(".a-tags", box);
    const tags = tagsEl.value.split(/[,\s]+/).filter(Boolean);
    btn.disabled = true;
    status.textContent = "Saving …";
    try {
      const r = await fetch("/api/notes", {
        method: "POST", credentials: "same-origin",
        headers: { "content-type": "application/json", "x-timetracer-token": token },
        body: JSON.stringify({ file: box.getAttribute("data-file"), tags: tags, note: $(".a-note", box).value }),
      });
      const text = await r.text();
      let ans = null;
      try { ans = JSON.parse(text); } catch (e) { ans = { error: text }; }
      if (!r.ok) throw new Error((ans && ans.error) || r.statusText);
      tagsEl.value = ans.tags.join(", ");
      status.textContent = "Saved beside the cassette";
      onRowsChanged.forEach((f) => f());
    } catch (e) {
      status.textContent = "Not saved: " + e.message;
    } finally {
      btn.disabled = false;
    }
  });

  const dataEl = $("#tt-data");
  if (!dataEl) return; // timeline page: nothing else to do
  let data = JSON.parse(dataEl.textContent);
  const live = !!data.live;
  const tbody = $("#tbody");
  const detail = $("#detail");
  const layout = $(".layout");
  const byN = new Map();
  const index = () => { byN.clear(); data.rows.forEach((r) => byN.set(r.n, r)); };
  index();

  // ---- filters and sorting ----
  const st = { sort: "t", dir: -1 };
  const ctl = {
    q: $("#f-q"), method: $("#f-method"), dep: $("#f-dep"), dmin: $("#f-dmin"),
    dmax: $("#f-dmax"), range: $("#f-range"), from: $("#f-from"), to: $("#f-to"), tag: $("#f-tag"),
  };
  const SORTS = ["t", "m", "p", "s", "d", "deps"];
  // Filters live in the query string (a shared link reproduces them) and in localStorage
  // (restored when the address carries none), one entry per served or written directory.
  const where = $("header.top .where");
  const FILTERS_KEY = "timetracer.filters:" + (live ? "serve:" : "file:") + (where ? where.textContent : location.pathname);
  const FILTER_PARAMS = ["q", "method", "status", "dmin", "dmax", "range", "from", "to", "dep", "tag", "sort"];
  function filterParams() {
    const p = new URLSearchParams();
    const put = (k, v) => { if (v) p.set(k, v); };
    put("q", ctl.q.value.trim());
    put("method", ctl.method.value);
    put("status", classesOn().join(","));
    put("dmin", ctl.dmin.value);
    put("dmax", ctl.dmax.value);
    put("range", ctl.range.value);
    if (ctl.range.value === "custom") { put("from", ctl.from.value); put("to", ctl.to.value); }
    put("dep", ctl.dep.value);
    put("tag", ctl.tag.value.trim());
    if (st.sort !== "t" || st.dir !== -1) put("sort", (st.dir > 0 ? "" : "-") + st.sort);
    return p;
  }
  function setFilters(p) {
    const choose = (sel, v) => {
      sel.value = v || "";
      if (sel.value !== (v || "")) sel.selectedIndex = 0; // not offered here: any
    };
    ctl.q.value = p.get("q") || "";
    choose(ctl.method, p.get("method"));
    const on = (p.get("status") || "").split(",");
    $$("input.f-class").forEach((i) => { i.checked = on.includes(i.value); });
    ctl.dmin.value = p.get("dmin") || "";
    ctl.dmax.value = p.get("dmax") || "";
    choose(ctl.range, p.get("range"));
    ctl.from.value = p.get("from") || "";
    ctl.to.value = p.get("to") || "";
    choose(ctl.dep, p.get("dep"));
    ctl.tag.value = p.get("tag") || "";
    const sort = p.get("sort") || "";
    const key = sort.replace(/^-/, "");
    if (SORTS.includes(key)) { st.sort = key; st.dir = sort.startsWith("-") ? -1 : 1; }
  }
  function keepFilters() {
    const qs = filterParams().toString();
    saved.set(FILTERS_KEY, qs);
    const want = qs ? "?" + qs : location.pathname;
    if (location.search !== (qs ? "?" + qs : "")) {
      try { history.replaceState(history.state, "", want); } catch (e) { /* a file:// page may refuse */ }
    }
  }
  {
    const fromUrl = new URLSearchParams(location.search);
    const p = FILTER_PARAMS.some((k) => fromUrl.has(k)) ? fromUrl : new URLSearchParams(saved.get(FILTERS_KEY) || "");
    setFilters(p);
  }
  function classesOn() { return $$("input.f-class:checked").map((i) => i.value); }
  function timeBounds() {
    const r = ctl.range.value;
    const now = Date.now() / 1000;
    const rel = { "15m": 900, "1h": 3600, "24h": 86400, "7d": 604800 }[r];
    if (rel) return [now - rel, null];
    if (r === "custom") {
      const f = ctl.from.value ? new Date(ctl.from.value).getTime() / 1000 : null;
      const t = ctl.to.value ? new Date(ctl.to.value).getTime() / 1000 : null;
      return [f, t];
    }
    return [null, null];
  }
  function matches(r, f) {
    if (f.q && !(r.p.toLowerCase().includes(f.q) || r.e.toLowerCase().includes(f.q))) return false;
    if (f.method && r.m.toUpperCase() !== f.method) return false;
    if (f.classes.length && !r.c.some((c) => f.classes.includes(c))) return false;
    if (f.dmin !== null && r.d < f.dmin) return false;
    if (f.dmax !== null && r.d > f.dmax) return false;
    if (f.from !== null && r.t < f.from) return false;
    if (f.to !== null && r.t > f.to) return false;
    if (f.dep === "none" && r.k.length) return false;
    if (f.dep && f.dep !== "none" && !r.k.includes(f.dep)) return false;
    if (f.tag && !(r.g || []).includes(f.tag)) return false;
    return true;
  }
  const num = (el) => (el.value === "" ? null : Number(el.value));
  function cmp(a, b) {
    const k = st.sort;
    const va = k === "deps" ? a.deps : a[k];
    const vb = k === "deps" ? b.deps : b[k];
    let c = typeof va === "string" ? va.localeCompare(vb) : va - vb;
    if (c === 0) c = a.t - b.t;
    return c * st.dir;
  }
  function apply() {
    ctl.from.parentElement.hidden = ctl.range.value !== "custom";
    ctl.to.parentElement.hidden = ctl.range.value !== "custom";
    const [from, to] = timeBounds();
    const f = {
      q: ctl.q.value.trim().toLowerCase(), method: ctl.method.value, dep: ctl.dep.value,
      classes: classesOn(), dmin: num(ctl.dmin), dmax: num(ctl.dmax), from, to,
      tag: ctl.tag.value.trim().toLowerCase(),
    };
    const rows = data.rows.slice().sort(cmp);
    let shown = 0;
    for (const r of rows) {
      const tr = tbody.querySelector('tr[data-n="' + r.n + '"]');
      if (!tr) continue;
      const ok = matches(r, f);
      tr.hidden = !ok;
      if (ok) shown++;
      tbody.appendChild(tr);
    }
    $("#count").textContent = "Showing " + shown + " of " + data.rows.length + " requests";
    $("#empty").hidden = shown !== 0;
    $$("th[data-sort]").forEach((th) => {
      if (th.getAttribute("data-sort") === st.sort) {
        th.setAttribute("aria-sort", st.dir > 0 ? "ascending" : "descending");
      } else {
        th.removeAttribute("aria-sort");
      }
    });
    keepFilters();
  }
  $(".filters").addEventListener("input", apply);
  $(".filters").addEventListener("change", apply);
  $("#f-clear").addEventListener("click", () => {
    $$(".filters input").forEach((i) => { if (i.type === "checkbox") i.checked = false; else i.value = ""; });
    $$(".filters select").forEach((s) => { s.selectedIndex = 0; });
    apply();
  });
  $$("th[data-sort] button").forEach((b) => b.addEventListener("click", () => {
    const k = b.parentElement.getAttribute("data-sort");
    if (st.sort === k) st.dir = -st.dir;
    else { st.sort = k; st.dir = (k === "m" || k === "p") ? 1 : -1; }
    apply();
  }));
  document.addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-endpoint]");
    if (!b) return;
    ctl.q.value = b.getAttribute("data-endpoint");
    apply();
    ctl.q.scrollIntoView({ block: "center" });
  });
  tbody.addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-tag]");
    if (!b) return;
    ctl.tag.value = b.getAttribute("data-tag");
    apply();
  });

  // ---- detail, compare ----
  function fragment(html) {
    const doc = new DOMParser().parseFromString(html, "text/html");
    const frag = document.createDocumentFragment();
    Array.from(doc.body.childNodes).forEach((n) => frag.appendChild(document.adoptNode(n)));
    return frag;
  }
  function show(nodes) {
    detail.replaceChildren(nodes);
    layout.classList.add("has-detail");
    if (window.innerWidth < 1300) detail.scrollIntoView({ behavior: "smooth", block: "start" });
  }
  function message(text) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = text;
    return p;
  }
  function select(n) {
    $$("tr.row.selected").forEach((tr) => tr.classList.remove("selected"));
    const tr = tbody.querySelector('tr[data-n="' + n + '"]');
    if (tr) tr.classList.add("selected");
  }
  async function get(url) {
    const r = await fetch(url, { credentials: "same-origin", headers: { "x-timetracer-token": token } });
    const text = await r.text();
    if (!r.ok) throw new Error(text || r.statusText);
    return text;
  }
  function localDetail(n) {
    const t = document.getElementById("detail-" + n);
    return t ? document.importNode(t.content, true) : message("No details for this request.");
  }
  async function open(n) {
    const r = byN.get(n);
    if (!r) return;
    select(n);
    if (!live) { show(localDetail(n)); return; }
    show(message("Loading " + r.p + " …"));
    try {
      show(fragment(await get("/api/detail?f=" + encodeURIComponent(r.rel))));
    } catch (e) {
      show(message("Could not load the cassette: " + e.message));
    }
  }
  tbody.addEventListener("click", (ev) => {
    const b = ev.target.closest("button.open");
    if (b) open(Number(b.getAttribute("data-n")));
  });

  // ---- keyboard: j/k move the selection, Enter opens it, Esc closes, / filters ----
  const selectedN = () => {
    const tr = $("tr.row.selected", tbody);
    return tr && !tr.hidden ? Number(tr.getAttribute("data-n")) : null;
  };
  function move(step) {
    const rows = $$("tr.row", tbody).filter((tr) => !tr.hidden);
    if (!rows.length) return;
    let i = rows.findIndex((tr) => tr.classList.contains("selected"));
    i = i < 0 ? (step > 0 ? 0 : rows.length - 1) : Math.min(rows.length - 1, Math.max(0, i + step));
    select(Number(rows[i].getAttribute("data-n")));
    rows[i].scrollIntoView({ block: "nearest" });
  }
  function closeDetail() {
    detail.replaceChildren();
    layout.classList.remove("has-detail");
    const tr = $("tr.row.selected", tbody);
    const b = tr && $("button.open", tr);
    if (b) b.focus();
  }
  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.isComposing) return;
    const el = document.activeElement;
    const typing = el && (["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName) || el.isContentEditable);
    if (ev.key === "Escape") {
      if (typing) { el.blur(); return; }
      if (layout.classList.contains("has-detail")) { ev.preventDefault(); closeDetail(); }
      return;
    }
    if (typing) return;
    if (ev.key === "/") { ev.preventDefault(); ctl.q.focus(); ctl.q.select(); }
    else if (ev.key === "j") { ev.preventDefault(); move(1); }
    else if (ev.key === "k") { ev.preventDefault(); move(-1); }
    else if (ev.key === "Enter" && !(el && ["BUTTON", "A", "SUMMARY"].includes(el.tagName))) {
      const n = selectedN();
      if (n !== null) { ev.preventDefault(); open(n); }
    }
  });
  const cmpBtn = $("#compare");
  const chosen = () => $$("input.cmp:checked", tbody).map((i) => Number(i.getAttribute("data-n")));
  function updateCompare() {
    const n = chosen().length;
    cmpBtn.disabled = n !== 2;
    cmpBtn.textContent = n === 2 ? "Compare the 2 selected" : "Compare (select 2: " + n + " selected)";
  }
  tbody.addEventListener("change", (ev) => { if (ev.target.matches("input.cmp")) updateCompare(); });
  cmpBtn.addEventListener("click", async () => {
    const [a, b] = chosen().map((n) => byN.get(n));
    if (!a || !b) return;
    if (live) {
      show(message("Comparing …"));
      try {
        show(fragment(await get("/api/compare?a=" + encodeURIComponent(a.rel) + "&b=" + encodeURIComponent(b.rel))));
      } catch (e) { show(message("Could not compare: " + e.message)); }
      return;
    }
    const wrap = document.createElement("section");
    const h = document.createElement("h2");
    h.textContent = "Compare";
    const cols = document.createElement("div");
    cols.className = "compare-cols";
    for (const r of [a, b]) {
      const col = document.createElement("div");
      col.appendChild(localDetail(r.n));
      cols.appendChild(col);
    }
    wrap.append(h, cols);
    show(wrap);
  });

  // ---- replay (serve) ----
  document.addEventListener("click", async (ev) => {
    const btn = ev.target.closest("button[data-replay]");
    if (!btn || !live) return;
    const out = document.getElementById(btn.getAttribute("data-out"));
    btn.disabled = true;
    out.replaceChildren(message("Replaying … the replay service runs the app against this cassette; this can take a while."));
    try {
      const r = await fetch("/api/replay", {
        method: "POST", credentials: "same-origin",
        headers: { "content-type": "application/json", "x-timetracer-token": token },
        body: JSON.stringify({ file: btn.getAttribute("data-replay") }),
      });
      const text = await r.text();
      out.replaceChildren(r.headers.get("content-type").startsWith("text/html") ? fragment(text) : message(text));
    } catch (e) {
      out.replaceChildren(message("The replay request failed: " + e.message));
    } finally {
      btn.disabled = false;
    }
  });

  // ---- live updates (serve) ----
  let polling = false;
  async function refreshRows() {
    if (polling) return;
    polling = true;
    try {
      const r = await fetch("/api/rows?v=" + data.version, { credentials: "same-origin", headers: { "x-timetracer-token": token } });
      $("#live").classList.toggle("stale", !r.ok);
      if (r.status === 200) {
        const upd = await r.json();
        const before = new Set(data.rows.map((x) => x.rel));
        const picked = new Set(chosen().map((n) => byN.get(n).rel));
        const sel = $("tr.row.selected");
        const selRel = sel ? byN.get(Number(sel.getAttribute("data-n"))).rel : null;
        data = upd.data;
        index();
        const tb = fragment("<table><tbody>" + upd.tbody + "</tbody></table>");
        const rows = Array.from(tb.querySelectorAll("tr"));
        tbody.replaceChildren(...rows);
        $("#cards").replaceChildren(fragment(upd.cards));
        $("#trends").replaceChildren(fragment(upd.trends));
        $("#graphs").replaceChildren(fragment(upd.graphs));
        for (const r2 of data.rows) {
          const tr = tbody.querySelector('tr[data-n="' + r2.n + '"]');
          if (!tr) continue;
          if (!before.has(r2.rel)) tr.classList.add("new");
          if (picked.has(r2.rel)) tr.querySelector("input.cmp").checked = true;
          if (r2.rel === selRel) tr.classList.add("selected");
        }
        updateCompare();
        apply();
      }
    } catch (e) {
      $("#live").classList.add("stale");
    } finally {
      polling = false;
    }
  }
  async function poll() {
    await refreshRows();
    setTimeout(poll, 2000);
  }
  if (live) {
    setTimeout(poll, 2000);
    onRowsChanged.push(refreshRows);
  }

  updateCompare();
  apply();
})();
