// timetracer pages: copy buttons, dashboard filters/sorting/detail/compare, and (serve) live
// updates and replay. Never builds HTML from strings: text goes through textContent, and the
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

  const dataEl = $("#tt-data");
  if (!dataEl) return; // timeline page: nothing else to do
  let data = JSON.parse(dataEl.textContent);
  const live = !!data.live;
  const token = live ? ($('meta[name="tt-token"]') || {}).content || "" : "";
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
    dmax: $("#f-dmax"), range: $("#f-range"), from: $("#f-from"), to: $("#f-to"),
  };
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
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "/" && document.activeElement.tagName !== "INPUT") { ev.preventDefault(); ctl.q.focus(); }
  });
  document.addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-endpoint]");
    if (!b) return;
    ctl.q.value = b.getAttribute("data-endpoint");
    apply();
    ctl.q.scrollIntoView({ block: "center" });
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
  async function poll() {
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
    }
    setTimeout(poll, 2000);
  }
  if (live) setTimeout(poll, 2000);

  updateCompare();
  apply();
})();
