// Storeside staff tablet: live customer cards from the edge's SSE feed, feedback taps,
// QR check-in. Plain JS, no build step, no third-party code. Text from the server is only
// ever set with textContent (never innerHTML).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const cards = new Map(); // visit_id -> latest card payload
  const arrived = new Map(); // visit_id -> first time seen (ms, edge clock): newest first
  const done = new Map(); // visit_id|product_id -> action tapped (until the card refreshes)
  const openWhy = new Set(); // visit_id|product_id whose "why" panel is open
  let clockOffsetMs = 0; // edge clock - this tablet's clock
  let source = null;
  let retryMs = 1000;
  let retryTimer = null;
  let online = false;

  const REASON_LABELS = {
    history: "Bought before", copurchase: "Often bought together",
    category: "Favourite category", cycle: "Due again", popular: "Popular in this store",
    trend: "Trending", context: "Time of day", offer: "Offer", zone: "In this zone",
    member_offer: "Member offer",
  };
  const CONSENT_TEXT = {
    personalize: "Personalised: the customer consented to the use of their purchase history.",
    popular: "Store-wide popularity: none of the customer's own data was used.",
    app_offers: "Also offered in the customer's app (consent to app offers).",
    staff_display: "Name and profile shown with the customer's consent.",
  };
  const money = new Intl.NumberFormat(undefined, {
    minimumFractionDigits: 2, maximumFractionDigits: 2,
  });
  const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });

  // ---------------------------------------------------------------- connection
  function setOnline(value) {
    online = value;
    const conn = $("conn");
    conn.dataset.state = value ? "online" : "offline";
    conn.textContent = value ? "Live" : "Offline";
    $("offline-banner").hidden = value;
    document.body.dataset.conn = value ? "online" : "offline";
  }

  function connect() {
    clearTimeout(retryTimer);
    if (source) source.close();
    source = new EventSource("/v1/stream");
    source.addEventListener("snapshot", (e) => {
      replaceAll(JSON.parse(e.data).visits || []);
      retryMs = 1000;
      setOnline(true);
      showStore();
    });
    source.addEventListener("recommendation", (e) => upsert(JSON.parse(e.data), true));
    source.addEventListener("visit", (e) => upsert(JSON.parse(e.data), false));
    source.addEventListener("visit_ended", (e) => removeVisit(JSON.parse(e.data).visit_id));
    source.addEventListener("resync", resync);
    source.onerror = () => {
      setOnline(false);
      if (source && source.readyState === EventSource.CLOSED) {
        source.close();
        source = null;
        scheduleReconnect(); // refused (401, 503): the browser does not retry by itself
      }
    };
  }

  function scheduleReconnect() {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(async () => {
      try {
        const r = await fetch("/v1/visits", { cache: "no-store" });
        if (r.status === 401) { location.reload(); return; } // unpaired: the pair page
      } catch (_) { /* still down: EventSource will tell */ }
      connect();
    }, retryMs);
    retryMs = Math.min(retryMs * 2, 5000);
  }

  async function resync() {
    try {
      const r = await fetch("/v1/visits", { cache: "no-store" });
      if (r.ok) replaceAll((await r.json()).visits || []);
    } catch (_) { connect(); }
  }

  // A half-open connection (Wi-Fi gone quiet) never errors: probe now and then.
  setInterval(async () => {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), 4000);
    try {
      const r = await fetch("/healthz", { cache: "no-store", signal: ctrl.signal });
      if (!r.ok) throw new Error(String(r.status));
      if (!online && !source) connect();
    } catch (_) {
      setOnline(false);
      if (source && source.readyState === EventSource.OPEN) { source.close(); source = null; scheduleReconnect(); }
    } finally { clearTimeout(timer); }
  }, 10000);

  // ---------------------------------------------------------------- state
  function noteClock(card) {
    if (typeof card.ts === "number") clockOffsetMs = card.ts * 1000 - Date.now();
  }
  const edgeNow = () => Date.now() + clockOffsetMs;

  function replaceAll(visits) {
    const keep = new Set(visits.map((v) => v.visit_id));
    for (const id of [...cards.keys()]) if (!keep.has(id)) cards.delete(id);
    for (const id of [...arrived.keys()]) if (!keep.has(id)) arrived.delete(id);
    for (const v of visits) {
      cards.set(v.visit_id, v);
      if (!arrived.has(v.visit_id)) arrived.set(v.visit_id, v.ts * 1000);
    }
    render();
  }

  function upsert(card, ranked) {
    noteClock(card);
    const isNew = !cards.has(card.visit_id);
    cards.set(card.visit_id, card);
    if (!arrived.has(card.visit_id)) arrived.set(card.visit_id, card.ts * 1000);
    if (ranked) for (const key of [...done.keys()]) if (key.startsWith(card.visit_id + "|")) done.delete(key);
    render(isNew ? card.visit_id : null);
  }

  function removeVisit(visitId) {
    cards.delete(visitId);
    arrived.delete(visitId);
    render();
  }

  // ---------------------------------------------------------------- rendering
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function minutes(sinceMs) {
    const m = Math.max(0, Math.floor((edgeNow() - sinceMs) / 60000));
    return m < 1 ? "<1 min" : m < 60 ? `${m} min` : `${Math.floor(m / 60)} h ${m % 60} min`;
  }
  const pretty = (slug) => String(slug).replace(/[-_]+/g, " ").replace(/^./, (c) => c.toUpperCase());

  function render(freshId) {
    const list = $("cards");
    const order = [...cards.values()].sort(
      (a, b) => (arrived.get(b.visit_id) || 0) - (arrived.get(a.visit_id) || 0));
    const nodes = order.map((card) => renderCard(card, card.visit_id === freshId));
    list.replaceChildren(...nodes);
    $("empty").hidden = order.length > 0;
    $("count").textContent = order.length === 1 ? "1 customer" : `${order.length} customers`;
  }

  function renderCard(card, fresh) {
    const node = $("card-tpl").content.firstElementChild.cloneNode(true);
    node.dataset.visitId = card.visit_id;
    node.dataset.subject = card.subject;
    if (fresh) { node.classList.add("fresh"); setTimeout(() => node.classList.remove("fresh"), 4000); }
    const consent = new Set(card.consent || []);
    const named = consent.has("staff_display") && card.profile !== null;
    node.dataset.named = String(named);

    const avatar = node.querySelector(".avatar");
    if (named) avatar.textContent = (card.display_name || "?").slice(0, 1).toUpperCase();
    else { avatar.textContent = (card.display_name || "").split(" ").pop(); avatar.classList.add("anon"); }
    node.querySelector(".name").textContent = card.display_name;
    const tier = node.querySelector(".tier");
    if (card.tier) { tier.hidden = false; tier.textContent = card.tier; tier.dataset.tier = card.tier; }
    if (card.profile && card.profile.birthday_this_week) node.querySelector(".bday").hidden = false;
    const since = arrived.get(card.visit_id) || card.ts * 1000;
    node.querySelector(".meta").textContent =
      `Arrived ${clock.format(new Date(since - clockOffsetMs))} · in store ${minutes(since)}`;

    const where = node.querySelector(".where");
    if (card.zone) {
      where.append(el("strong", "zone zone-name", pretty(card.zone)));
      where.append(el("span", "dwell", card.dwell_since ? `for ${minutes(card.dwell_since * 1000)}` : ""));
    } else {
      where.append(el("span", "zone", "No zone yet"));
    }

    if (named) renderPrefs(node.querySelector(".prefs"), card.profile.preferences || {});
    node.querySelector(".private").hidden = consent.has("staff_display");

    const sugs = node.querySelector(".sugs");
    for (const s of (card.suggestions || []).slice(0, 5)) sugs.append(renderSuggestion(card, s));

    const foot = node.querySelector(".card-foot");
    const consentText = consent.size ? [...consent].map((c) => c.replace(/_/g, " ")).join(", ") : "none";
    foot.append(el("span", "consent-line", `Consent: ${consentText}`));
    foot.append(el("span", "", card.source === "model"
      ? `Ranked by model ${card.model_version || ""}`.trim() : "Store best-sellers"));
    return node;
  }

  function renderPrefs(box, prefs) {
    const chips = [];
    const sizes = prefs.sizes && typeof prefs.sizes === "object" ? prefs.sizes : {};
    for (const [category, size] of Object.entries(sizes)) {
      const chip = el("span", "chip");
      chip.append(`${pretty(category)} `, el("b", "", String(size)));
      chips.push(chip);
    }
    for (const brand of Array.isArray(prefs.brands) ? prefs.brands : []) {
      const chip = el("span", "chip");
      chip.append("Brand: ", el("b", "", String(brand)));
      chips.push(chip);
    }
    if (typeof prefs.notes === "string" && prefs.notes) chips.push(el("span", "chip note", pretty(prefs.notes)));
    box.replaceChildren(...chips);
    box.hidden = chips.length === 0;
  }

  function renderSuggestion(card, s) {
    const node = $("sug-tpl").content.firstElementChild.cloneNode(true);
    node.dataset.productId = s.product_id;
    node.querySelector(".rank").textContent = String(s.rank);
    node.querySelector(".sug-name").textContent = s.name;
    const sub = node.querySelector(".sug-sub");
    sub.append(pretty(s.category || ""));
    if (s.zone) sub.append(` · ${pretty(s.zone)}`);
    sub.append(" · ");
    sub.append(s.stock <= 3 ? el("span", "low", `only ${s.stock} left`) : el("span", "ok", `${s.stock} in stock`));
    renderVariants(sub, s.variants);
    renderPrice(node, s);
    const reasons = s.reasons || [];
    node.querySelector(".sug-reason").textContent = reasons.slice(0, 2).map((r) => r.text).join(" · ");

    const why = node.querySelector(".why-body");
    const ul = el("ul");
    for (const r of reasons) {
      const li = el("li");
      li.append(el("span", "kind", `${REASON_LABELS[r.kind] || r.kind}: `), r.text);
      ul.append(li);
    }
    if (!reasons.length) ul.append(el("li", "", "No specific reason: a general suggestion."));
    why.append(ul);
    for (const c of s.allowed_by || []) why.append(el("p", "consent", CONSENT_TEXT[c] || `Allowed by: ${c}`));

    const key = `${card.visit_id}|${s.product_id}`;
    const details = node.querySelector(".why");
    details.open = openWhy.has(key);
    details.addEventListener("toggle", () => {
      if (details.open) openWhy.add(key); else openWhy.delete(key);
    });
    const tapped = done.get(key);
    for (const button of node.querySelectorAll("button[data-action]")) {
      if (tapped) {
        button.disabled = true;
        if (button.dataset.action === tapped) button.classList.add("chosen");
      }
      button.addEventListener("click", () => sendFeedback(card, s, button.dataset.action, node));
    }
    if (tapped) node.classList.add("done");
    return node;
  }

  // The suggestion stands for its style: name the other in-stock variants ("also in navy · grey").
  function renderVariants(sub, variants) {
    if (!Array.isArray(variants) || !variants.length) return;
    const line = el("div", "sug-variants", `also in ${variants.map((v) => v.name).join(" · ")}`);
    line.title = variants.map((v) => `${v.name}: ${v.stock} in stock`).join("\n");
    sub.after(line);
  }

  // A store offer: a badge, the list price struck through, the price the customer pays.
  function renderPrice(node, s) {
    const box = node.querySelector(".sug-price");
    if (!s.offer) { box.textContent = money.format(s.price); return; }
    node.classList.add("offered");
    const pct = `${Math.round(s.offer.discount_pct * 10) / 10}%`;
    box.replaceChildren(el("span", "offer-badge", `−${pct}`), el("s", "was", money.format(s.price)),
      el("span", "now", money.format(s.offer.price_after)));
    box.title = `Offer ${s.offer.offer_id}: ${pct} off`;
  }

  // ---------------------------------------------------------------- feedback
  function newId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes); // randomUUID needs HTTPS; a store LAN may be plain HTTP
    return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function sendFeedback(card, s, action, node) {
    const buttons = node.querySelectorAll("button[data-action]");
    buttons.forEach((b) => { b.disabled = true; });
    const body = {
      v: 1, event_id: newId(), ts: Date.now() / 1000, subject: card.subject,
      visit_id: card.visit_id, product_id: s.product_id, action, channel: "staff",
    };
    if (s.offer) body.offer_id = s.offer.offer_id; // the hub learns which offer it was
    try {
      const r = await fetch("/v1/feedback", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body), cache: "no-store",
      });
      if (r.status === 401) { location.reload(); return; }
      if (!r.ok) throw new Error(await reason(r));
      done.set(`${card.visit_id}|${s.product_id}`, action);
      node.classList.add("done");
      node.querySelector(`button[data-action="${action}"]`).classList.add("chosen");
    } catch (err) {
      buttons.forEach((b) => { b.disabled = false; });
      toast(`Could not send: ${err.message}`, true);
    }
  }

  async function reason(response) {
    try {
      const data = await response.json();
      return (data.detail && data.detail.reason) || `HTTP ${response.status}`;
    } catch (_) { return `HTTP ${response.status}`; }
  }

  let toastTimer = null;
  function toast(text, bad) {
    const t = $("toast");
    t.textContent = text;
    t.classList.toggle("bad", Boolean(bad));
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 3500);
  }

  // ---------------------------------------------------------------- QR check-in
  const SCAN_MESSAGES = {
    no_qr_code: "Looking for a QR code…",
    not_a_checkin_code: "That QR code is not a Storeside check-in code.",
    token_expired: "This check-in code has expired: ask the customer to refresh it in the app.",
    token_replayed: "This check-in code was already used.",
    token_wrong_audience: "This code is for another store.",
    not_an_image: "That file is not a photo (JPEG or PNG).",
    too_large: "That photo is too large.",
  };
  let stream = null;
  let scanning = false;

  async function submitFrame(blob) {
    const r = await fetch("/v1/checkin/qr", {
      method: "POST", headers: { "Content-Type": blob.type || "image/jpeg" }, body: blob,
      cache: "no-store",
    });
    if (r.status === 401 && !(await r.clone().json().catch(() => ({}))).detail?.reason?.startsWith("token_")) {
      location.reload();
      return { ok: false, reason: "unpaired" };
    }
    if (r.ok) return { ok: true, data: await r.json() };
    return { ok: false, reason: await reason(r) };
  }

  function scanResult(result, fromCamera) {
    const status = $("scan-status");
    if (result.ok) {
      const data = result.data;
      stopCamera();
      $("scan").close();
      toast(data.duplicate ? "Already checked in." : `Checked in: ${data.card ? data.card.display_name : "customer"}`);
      return true;
    }
    const quiet = fromCamera && result.reason === "no_qr_code";
    status.textContent = !fromCamera && result.reason === "no_qr_code"
      ? "No QR code found in that photo: try again, closer and steadier."
      : SCAN_MESSAGES[result.reason] || `Refused: ${result.reason}`;
    status.classList.toggle("bad", !quiet);
    return false;
  }

  async function cameraLoop(video) {
    const canvas = document.createElement("canvas");
    while (scanning) {
      if (video.videoWidth) {
        canvas.width = video.videoWidth;
        canvas.height = video.videoHeight;
        canvas.getContext("2d").drawImage(video, 0, 0);
        const blob = await new Promise((res) => canvas.toBlob(res, "image/jpeg", 0.85));
        if (blob && scanning) {
          try { if (scanResult(await submitFrame(blob), true)) return; } catch (_) { /* offline */ }
        }
      }
      await new Promise((res) => setTimeout(res, 700));
    }
  }

  async function openScan() {
    const dialog = $("scan");
    $("scan-status").textContent = "";
    dialog.showModal();
    const video = $("scan-video");
    const canCamera = window.isSecureContext && navigator.mediaDevices && navigator.mediaDevices.getUserMedia;
    if (!canCamera) {
      video.parentElement.hidden = true;
      $("scan-status").textContent = "Live camera needs HTTPS here: take a photo of the code instead.";
      return;
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        video: { facingMode: "environment", width: { ideal: 1280 }, height: { ideal: 720 } }, audio: false,
      });
      video.parentElement.hidden = false;
      video.srcObject = stream;
      await video.play();
      scanning = true;
      $("scan-status").textContent = SCAN_MESSAGES.no_qr_code;
      cameraLoop(video);
    } catch (_) {
      video.parentElement.hidden = true;
      $("scan-status").textContent = "No camera available: take or choose a photo of the code.";
    }
  }

  function stopCamera() {
    scanning = false;
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
  }

  $("scan-open").addEventListener("click", openScan);
  $("scan").addEventListener("close", stopCamera);
  $("scan-file").addEventListener("change", async (e) => {
    const file = e.target.files && e.target.files[0];
    e.target.value = "";
    if (!file) return;
    $("scan-status").textContent = "Reading the code…";
    try { scanResult(await submitFrame(file), false); } catch (_) { scanResult({ ok: false, reason: "offline" }, false); }
  });

  async function showStore() {
    try {
      const r = await fetch("/v1/status", { cache: "no-store" });
      if (!r.ok) return;
      const status = await r.json();
      $("store-name").textContent = `Store ${status.store}` +
        (status.state === "degraded" ? " · best-sellers only (model offline)" : "");
    } catch (_) { /* the banner already says offline */ }
  }

  // Dwell and "x min ago" move on without new events.
  setInterval(() => { if (cards.size) render(); }, 30000);
  // A fresh device token twice a day (the edge sets it in the HttpOnly cookie; the old one
  // works for another minute): a copied token ages out without re-pairing the tablet.
  setInterval(() => { fetch("/v1/devices/rotate", { method: "POST" }).catch(() => {}); },
    12 * 3600 * 1000);
  setOnline(false);
  $("conn").dataset.state = "connecting";
  $("conn").textContent = "Connecting…";
  $("offline-banner").hidden = true;
  connect();
})();
