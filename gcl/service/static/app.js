// gcl search page: POST /search, results as a grid, paging with offset/k, the query and page in
// the URL (?q=...&page=N: back button, shareable links). No build step, no CDN, no inline code
// (the page works under a Content-Security-Policy of script-src 'self').
"use strict";
(function () {
  const body = document.body;
  const pageSize = parseInt(body.dataset.pageSize, 10) || 12;
  const maxK = parseInt(body.dataset.maxK, 10) || 100;
  const lastPage = Math.max(0, Math.ceil(maxK / pageSize) - 1);  // 0-based: offset = page * pageSize < maxK
  const needsKey = body.dataset.auth === "1";
  const imageField = body.dataset.imageField;
  const titleField = body.dataset.titleField || "title";
  const $ = (id) => document.getElementById(id);
  const form = $("search-form"), input = $("query"), keyInput = $("api-key");
  const status = $("status"), results = $("results"), pager = $("pager"), note = $("note");
  const prev = $("prev"), next = $("next"), pageLabel = $("page-label");
  let query = "", page = 0, objectUrls = [], latest = 0;

  if (needsKey) {
    keyInput.hidden = false;
    keyInput.value = sessionStorage.getItem("gcl-api-key") || "";
  }
  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (needsKey && keyInput.value) h["X-API-Key"] = keyInput.value;
    return h;
  }
  function setStatus(text, kind) {  // kind: "" | "hint" | "error"
    status.textContent = text;
    status.className = kind || "";
  }
  // No results, no pager, no note: the state before a search, after an error or a blank query.
  function clear(text, kind) {
    latest += 1;  // a response still in flight is now stale
    objectUrls.forEach((u) => URL.revokeObjectURL(u));
    objectUrls = [];
    results.replaceChildren();
    pager.hidden = true;
    pageLabel.textContent = "";
    note.hidden = true;
    setStatus(text, kind);
  }

  // ------------------------------------------------------------------ URL state
  function readUrl() {
    const p = new URLSearchParams(location.search);
    const n = /^[0-9]+$/.test(p.get("page") || "") ? parseInt(p.get("page"), 10) : 1;
    return { q: (p.get("q") || "").trim(), page: Math.min(Math.max(n, 1), lastPage + 1) - 1 };
  }
  function urlFor(q, pg) {
    const p = new URLSearchParams({ q: q });
    if (pg > 0) p.set("page", String(pg + 1));
    return location.pathname + "?" + p.toString();
  }
  function go(q, pg) {  // a new search or page: one history entry, then run it
    query = q;
    page = pg;
    const url = urlFor(q, pg);
    if (url !== location.pathname + location.search) history.pushState(null, "", url);
    run();
  }
  function fromUrl() {  // page load and back/forward: show what the URL says
    const s = readUrl();
    input.value = s.q;
    query = s.q;
    page = s.page;
    if (query) run();
    else clear("");
  }

  // ------------------------------------------------------------------ cards
  function titleOf(hit) {
    const f = hit.fields || {};
    if (typeof f[titleField] === "string" && f[titleField]) return f[titleField];
    for (const v of Object.values(f)) if (typeof v === "string" && v) return v;
    return hit.doc_id;
  }
  function imagePath(hit) {
    const path = imageField ? (hit.fields || {})[imageField] : null;
    return typeof path === "string" && path ? path : null;
  }
  function placeholder() {
    const d = document.createElement("div");
    d.className = "thumb none";
    d.textContent = "no image";
    return d;
  }
  function thumbnail(hit) {
    const path = imagePath(hit);
    if (!path) return placeholder();
    const img = document.createElement("img");
    img.className = "thumb";
    img.alt = titleOf(hit);
    img.loading = "lazy";
    const broken = () => img.replaceWith(placeholder());  // a missing or undecodable file: no alt text
    img.addEventListener("error", broken);
    const url = "/images/" + path.split("/").map(encodeURIComponent).join("/");
    if (needsKey) {  // <img> cannot send the key: fetch the bytes with it
      fetch(url, { headers: headers() }).then((r) => (r.ok ? r.blob() : null)).then((b) => {
        if (!b) return broken();
        const u = URL.createObjectURL(b);
        objectUrls.push(u);
        img.src = u;
      }).catch(broken);
    } else {
      img.src = url;
    }
    return img;
  }
  function card(hit, withImage) {
    const c = document.createElement("article");
    c.className = "card";
    c.dataset.docId = hit.doc_id;
    if (withImage) c.appendChild(thumbnail(hit));
    const title = document.createElement("div");
    title.className = "title";
    title.textContent = titleOf(hit);
    const meta = document.createElement("div");
    meta.className = "meta";
    const rank = document.createElement("span");
    rank.className = "rank";
    rank.textContent = "#" + hit.rank + " · " + hit.doc_id;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(4);
    meta.append(rank, score);
    c.append(title, meta);
    if (typeof hit.relevance === "number") {  // a calibrated model: the expected judged grade
      const rel = document.createElement("div");
      rel.className = "relevance";
      rel.title = "calibrated relevance: the expected judged grade for this similarity";
      rel.textContent = "relevance " + hit.relevance.toFixed(2);
      c.appendChild(rel);
    }
    return c;
  }

  // ------------------------------------------------------------------ search
  function render(data) {
    objectUrls.forEach((u) => URL.revokeObjectURL(u));
    objectUrls = [];
    // thumbnails only when some result has an image: a text-only index gets no empty squares
    const withImages = data.hits.some((h) => imagePath(h) !== null);
    results.replaceChildren(...data.hits.map((h) => card(h, withImages)));
    const first = data.offset + 1, last = data.offset + data.hits.length;
    if (data.hits.length) {
      setStatus(`Results ${first}–${last} for “${data.query}” (${data.took_ms.toFixed(1)} ms)`);
    } else {
      setStatus(page > 0 ? `No results on page ${page + 1} for “${data.query}”: the ranking ends earlier`
                         : `No results for “${data.query}”`);
    }
    note.hidden = !(last >= maxK && !data.has_more);
    note.textContent = `Results stop at ${maxK}: the service returns at most the first ${maxK} (max_k). ` +
                       "Refine the query to see other documents.";
    pager.hidden = !(page > 0 || data.has_more);
    prev.disabled = page === 0;
    next.disabled = !data.has_more;
    pageLabel.textContent = "Page " + (page + 1);
  }
  function errorText(r, data) {
    const d = data.detail;
    const msg = typeof d === "string" ? d : Array.isArray(d) ? d.map((e) => e.msg).join("; ") : r.statusText;
    return `Error ${r.status}: ${msg}`;
  }
  async function run() {
    const seq = ++latest;  // only the newest request may paint
    const offset = page * pageSize;
    const k = Math.min(pageSize, maxK - offset);
    setStatus("Searching…");
    try {
      const r = await fetch("/search", {
        method: "POST",
        headers: headers({ "Content-Type": "application/json" }),
        body: JSON.stringify({ query: query, k: k, offset: offset }),
      });
      const data = await r.json().catch(() => ({}));
      if (seq !== latest) return;
      if (!r.ok) return clear(errorText(r, data), "error");
      render(data);
    } catch (e) {
      if (seq === latest) clear("Error: " + (e && e.message ? e.message : e), "error");
    }
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (needsKey) sessionStorage.setItem("gcl-api-key", keyInput.value);
    const q = input.value.trim();
    if (!q) {
      clear("Type a query to search.", "hint");
      input.focus();
      return;
    }
    go(q, 0);
  });
  prev.addEventListener("click", () => { if (page > 0) go(query, page - 1); });
  next.addEventListener("click", () => { if (page < lastPage) go(query, page + 1); });
  window.addEventListener("popstate", fromUrl);
  fromUrl();  // a shared link (/?q=drill&page=2) runs its search on load
})();
