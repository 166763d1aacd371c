// gcl search page: POST /search, results as a grid, paging with offset/k. No build step, no CDN.
"use strict";
(function () {
  const body = document.body;
  const pageSize = parseInt(body.dataset.pageSize, 10) || 12;
  const maxK = parseInt(body.dataset.maxK, 10) || 100;
  const needsKey = body.dataset.auth === "1";
  const imageField = body.dataset.imageField;
  const titleField = body.dataset.titleField || "title";
  const $ = (id) => document.getElementById(id);
  const form = $("search-form"), input = $("query"), keyInput = $("api-key");
  const status = $("status"), results = $("results"), pager = $("pager");
  const prev = $("prev"), next = $("next"), pageLabel = $("page-label");
  let query = "", page = 0, objectUrls = [];

  if (needsKey) {
    keyInput.hidden = false;
    keyInput.value = sessionStorage.getItem("gcl-api-key") || "";
  }
  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (needsKey && keyInput.value) h["X-API-Key"] = keyInput.value;
    return h;
  }
  function setStatus(text, isError) {
    status.textContent = text;
    status.className = isError ? "error" : "";
  }
  function titleOf(hit) {
    const f = hit.fields || {};
    if (typeof f[titleField] === "string" && f[titleField]) return f[titleField];
    for (const v of Object.values(f)) if (typeof v === "string" && v) return v;
    return hit.doc_id;
  }
  function thumbnail(hit) {
    const path = imageField ? (hit.fields || {})[imageField] : null;
    if (typeof path !== "string" || !path) {
      const d = document.createElement("div");
      d.className = "thumb none";
      d.textContent = imageField ? "no image" : "";
      return imageField ? d : null;
    }
    const img = document.createElement("img");
    img.className = "thumb";
    img.alt = titleOf(hit);
    img.loading = "lazy";
    const url = "/images/" + path.split("/").map(encodeURIComponent).join("/");
    if (needsKey) {  // <img> cannot send the key: fetch the bytes with it
      fetch(url, { headers: headers() }).then((r) => (r.ok ? r.blob() : null)).then((b) => {
        if (!b) return;
        const u = URL.createObjectURL(b);
        objectUrls.push(u);
        img.src = u;
      });
    } else {
      img.src = url;
    }
    return img;
  }
  function render(data) {
    objectUrls.forEach((u) => URL.revokeObjectURL(u));
    objectUrls = [];
    results.replaceChildren();
    for (const hit of data.hits) {
      const card = document.createElement("article");
      card.className = "card";
      card.dataset.docId = hit.doc_id;
      const t = thumbnail(hit);
      if (t) card.appendChild(t);
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
      card.append(title, meta);
      results.appendChild(card);
    }
    const first = data.offset + 1, last = data.offset + data.hits.length;
    setStatus(data.hits.length ? `Results ${first}–${last} for “${data.query}” (${data.took_ms.toFixed(1)} ms)`
                               : `No results for “${data.query}”`);
    pager.hidden = !(page > 0 || data.has_more);
    prev.disabled = page === 0;
    next.disabled = !data.has_more;
    pageLabel.textContent = "Page " + (page + 1);
  }
  async function run() {
    if (!query) return;
    const offset = page * pageSize;
    const k = Math.min(pageSize, maxK - offset);
    if (k < 1) return;
    setStatus("Searching…");
    try {
      const r = await fetch("/search", {
        method: "POST",
        headers: headers({ "Content-Type": "application/json" }),
        body: JSON.stringify({ query: query, k: k, offset: offset }),
      });
      const data = await r.json().catch(() => ({}));
      if (!r.ok) {
        const d = data.detail;
        const msg = typeof d === "string" ? d : Array.isArray(d) ? d.map((e) => e.msg).join("; ") : r.statusText;
        results.replaceChildren();
        pager.hidden = true;
        setStatus(`Error ${r.status}: ${msg}`, true);
        return;
      }
      render(data);
    } catch (e) {
      setStatus("Error: " + e, true);
    }
  }
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    query = input.value.trim();
    if (needsKey) sessionStorage.setItem("gcl-api-key", keyInput.value);
    page = 0;
    run();
  });
  prev.addEventListener("click", () => { if (page > 0) { page -= 1; run(); } });
  next.addEventListener("click", () => { page += 1; run(); });
})();
