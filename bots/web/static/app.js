/* imaginebot web chat: plain JS, no build step, no network access beyond this server.
 * All text from users or the server goes into the page via textContent, never innerHTML. */
(() => {
  "use strict";

  const CID_KEY = "imaginebot.conversation";
  const ADMIN_PASSWORD_KEY = "imaginebot.adminPassword";
  const CID_RE = /^[A-Za-z0-9_-]{8,64}$/;
  const FINISHED = new Set(["done", "failed", "cancelled"]);
  const ENGINE_TITLES = { dfgan: "DF-GAN", diffusion: "Diffusion", "hf-api": "HF Inference API" };

  const $ = (sel) => document.querySelector(sel);
  const messagesEl = $("#messages");
  const welcomeEl = $("#welcome");
  const form = $("#form");
  const input = $("#prompt");
  const sendBtn = $("#send");
  const healthEl = $("#health");
  const lightbox = $("#lightbox");
  const lightboxImg = $("#lightbox-img");
  const lightboxOpen = $("#lightbox-open");
  const fileInput = $("#image");
  const attachBtn = $("#attach");
  const attachmentEl = $("#attachment");
  const dropZone = $("#drop-zone");
  // The server checks every picture (format, pixels, content); the page only spares a doomed upload.
  const MAX_UPLOAD_BYTES = 10 * 1024 * 1024;
  // Server-Sent Events push job changes; ?push=off (or a browser without EventSource) polls instead.
  const PUSH = typeof EventSource === "function" && !/[?&]push=off(&|$)/.test(location.search);

  /* ---------- conversation id ---------- */

  function randomId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    const b64 = btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    return "web-" + b64;
  }

  let memoryCid = null; // when localStorage is unavailable (some private modes)
  function getConversationId(fresh = false) {
    let cid = null;
    try {
      cid = fresh ? null : localStorage.getItem(CID_KEY);
    } catch (_) {
      cid = fresh ? null : memoryCid;
    }
    if (!cid || !CID_RE.test(cid)) {
      cid = randomId();
      try {
        localStorage.setItem(CID_KEY, cid);
      } catch (_) {
        memoryCid = cid;
      }
    }
    return cid;
  }

  let conversationId = getConversationId();

  /* ---------- small DOM helpers ---------- */

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function timeLabel(ts) {
    const d = ts ? new Date(ts * 1000) : new Date();
    return d.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  }

  function nearBottom() {
    const s = document.scrollingElement;
    return s.scrollHeight - s.scrollTop - window.innerHeight < 160;
  }

  function scrollToBottom(smooth) {
    const s = document.scrollingElement;
    window.scrollTo({ top: s.scrollHeight, behavior: smooth ? "smooth" : "auto" });
  }

  function append(node, force = false) {
    const stick = force || nearBottom();
    messagesEl.appendChild(node);
    updateWelcome();
    if (stick) scrollToBottom(true);
    return node;
  }

  function updateWelcome() {
    welcomeEl.hidden = messagesEl.children.length > 0;
  }

  // picture: an object URL of the picture sent with the prompt, or true (a reload: it was sent).
  function userBubble(text, ts, picture) {
    const li = el("li", "message user");
    li.title = timeLabel(ts);
    const body = el("div", "bubble");
    if (typeof picture === "string") {
      const img = el("img", "sent-picture");
      img.alt = "The picture sent with this prompt";
      // A file the browser cannot show (the server says what is wrong with it): just a mention.
      img.addEventListener("error", () => img.replaceWith(el("span", "chip sent-picture-chip", "with a file")));
      img.src = picture;
      body.appendChild(img);
    } else if (picture) {
      body.appendChild(el("span", "chip sent-picture-chip", "with a picture"));
    }
    const words = el("span", "text");
    if (text.trim()) {
      words.textContent = text;
    } else {
      body.classList.add("empty");
      words.textContent = "(empty message)";
    }
    body.appendChild(words);
    li.appendChild(body);
    return li;
  }

  function botBubble(text, { error = false, ts } = {}) {
    const li = el("li", "message bot" + (error ? " error" : ""));
    li.title = timeLabel(ts);
    const body = el("div", "bubble");
    if (error) body.appendChild(el("span", "badge", "!"));
    body.appendChild(el("span", "text", text));
    li.appendChild(body);
    return li;
  }

  // A bot message with a picture (a training run's loss curve or old-vs-new grid).
  function botImageBubble(text, url, ts) {
    const li = botBubble(text, { ts });
    if (!/^\/api\/runs\/[0-9a-f]{16}\/[a-z-]+\.png$/.test(url)) return li;
    const link = el("a", "pair-link");
    link.href = url;
    link.target = "_blank";
    link.rel = "noopener";
    link.title = "Open full size";
    const img = el("img", "pair");
    img.alt = text;
    img.decoding = "async";
    img.addEventListener("load", () => img.classList.add("loaded"));
    img.addEventListener("error", () => {
      img.replaceWith(el("div", "img-missing", "The picture is no longer available (it may have expired)."));
    });
    img.src = url;
    link.appendChild(img);
    link.addEventListener("click", (ev) => {
      if (ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
      if (typeof lightbox.showModal !== "function") return;
      ev.preventDefault();
      openLightbox(url, img.alt);
    });
    li.querySelector(".bubble").appendChild(link);
    return li;
  }

  /* ---------- jobs ---------- */

  const jobs = new Map(); // id -> { li, job, timer, delay, createdAt }

  function formatSeconds(s) {
    if (s === null || s === undefined) return "";
    return s < 10 ? `${s.toFixed(2)} s` : `${s.toFixed(1)} s`;
  }

  function engineTitle(name) {
    return ENGINE_TITLES[name] || name;
  }

  // The server writes the status line (the same words as the bots); the state is in job.status.
  function statusText(job) {
    return job.status_text || job.status;
  }

  function progressFraction(job) {
    if (job.status !== "running" || !job.progress || !job.progress.total) return null;
    const engines = job.engines && job.engines.length ? job.engines : [job.progress.engine];
    const idx = Math.max(0, engines.indexOf(job.progress.engine));
    const within = job.progress.step / job.progress.total;
    return Math.min(1, (idx + within) / engines.length);
  }

  function createJobBubble(job, ts) {
    const li = el("li", "message bot job");
    li.dataset.jobId = job.id;
    li.title = timeLabel(ts || job.created_at);
    const body = el("div", "bubble");

    const head = el("div", "job-head");
    head.appendChild(el("span", "spinner"));
    head.appendChild(el("span", "status"));
    head.appendChild(el("span", "elapsed"));
    const cancel = el("button", "cancel ghost small", "Cancel");
    cancel.type = "button";
    cancel.addEventListener("click", () => cancelJob(job.id, cancel));
    head.appendChild(cancel);
    body.appendChild(head);

    const meter = el("div", "meter");
    meter.appendChild(el("div", "meter-fill"));
    body.appendChild(meter);

    body.appendChild(el("div", "job-prompt"));
    body.appendChild(el("div", "job-preview"));
    body.appendChild(el("div", "job-error"));
    body.appendChild(el("div", "job-result"));
    li.appendChild(body);
    const entry = { li, job: null, timer: null, delay: 600, createdAt: job.created_at, misses: 0 };
    jobs.set(job.id, entry);
    renderJob(job);
    return li;
  }

  function renderJob(job) {
    const entry = jobs.get(job.id);
    if (!entry) return;
    const prev = entry.job;
    entry.job = job;
    const li = entry.li;
    li.dataset.status = job.status;
    li.classList.toggle("pending", !FINISHED.has(job.status));
    li.querySelector(".status").textContent = statusText(job);

    const cancel = li.querySelector(".cancel");
    cancel.hidden = FINISHED.has(job.status);

    const frac = progressFraction(job);
    const meter = li.querySelector(".meter");
    meter.hidden = FINISHED.has(job.status);
    meter.classList.toggle("indeterminate", frac === null);
    li.querySelector(".meter-fill").style.width = frac === null ? "" : `${Math.round(frac * 100)}%`;

    const promptEl = li.querySelector(".job-prompt");
    const shape = job.aspect ? `ar ${job.aspect}, ${job.width}×${job.height} px` : `${job.size} px`;
    const flags = [`seed ${job.seed}`, `${job.steps} steps`, shape];
    if (job.count > 1) flags.push(`${job.count} each`);
    if (job.negative) flags.push(`no “${job.negative}”`);
    if (job.image_input) flags.push(`from your picture, strength ${job.strength}`);
    if (job.model) flags.push(`model ${job.model}`);
    for (const lora of job.loras || []) flags.push(`LoRA ${lora.name}:${lora.weight}`);
    promptEl.textContent = flags.join(" · ");

    const errEl = li.querySelector(".job-error");
    if (job.status === "failed") {
      errEl.textContent = job.error || "Something went wrong while drawing.";
    } else if (job.status === "cancelled") {
      errEl.textContent = job.error || "This job was cancelled.";
    } else {
      errEl.textContent = "";
    }

    renderPreview(li.querySelector(".job-preview"), job);

    const showImage = job.status === "done" && job.delivered && job.image_url;
    const resultEl = li.querySelector(".job-result");
    if (showImage && !(prev && prev.status === "done" && prev.delivered && resultEl.firstChild)) {
      resultEl.replaceChildren(renderResult(job));
    }
    updateElapsed(entry);
  }

  function renderResult(job) {
    const frag = document.createDocumentFragment();
    const link = el("a", "pair-link");
    link.href = job.image_url;
    link.target = "_blank";
    link.rel = "noopener";
    link.title = "Open full size";
    const img = el("img", "pair");
    img.alt = `${job.prompt} — ${(job.engines || []).map(engineTitle).join(" and ")}, seed ${job.seed}`;
    img.decoding = "async";
    const stick = nearBottom();
    img.addEventListener("load", () => {
      img.classList.add("loaded");
      if (stick) scrollToBottom(false);
    });
    img.addEventListener("error", () => {
      img.replaceWith(el("div", "img-missing", "The image is no longer available (it may have expired)."));
    });
    img.src = job.image_url;
    link.appendChild(img);
    // A flagged picture this channel shows behind a spoiler: blurred until clicked once.
    const spoiler = (job.images || []).some((r) => (r.nsfw || []).some((d) => d.action === "spoiler"));
    if (spoiler) {
      link.classList.add("spoiler");
      link.appendChild(el("span", "spoiler-label", "Flagged picture — click to show"));
    }
    link.addEventListener("click", (ev) => {
      if (link.classList.contains("spoiler")) {
        ev.preventDefault();
        link.classList.remove("spoiler");
        return;
      }
      if (ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return; // let the browser open a tab
      if (typeof lightbox.showModal !== "function") return;
      ev.preventDefault();
      openLightbox(job.image_url, img.alt);
    });
    frag.appendChild(link);

    const caption = el("div", "caption");
    caption.appendChild(el("span", "chip seed", `seed ${job.seed}`));
    for (const r of job.images || []) {
      const chip = el("span", "chip engine");
      chip.appendChild(el("strong", null, engineTitle(r.engine)));
      chip.appendChild(el("span", "version", r.version));
      chip.appendChild(el("span", "secs", formatSeconds(r.seconds)));
      // An engine that cannot start from a picture drew from the text alone.
      if (r.text_only) chip.appendChild(el("span", "text-only", "text only"));
      caption.appendChild(chip);
    }
    // The job id is what /show takes to bring this result and its buttons back later.
    const jobChip = el("span", "chip job", `job ${job.id}`);
    jobChip.title = `/show ${job.id} brings this result back`;
    caption.appendChild(jobChip);
    frag.appendChild(caption);
    // What happened to pictures the safety checker flagged (withheld, behind a spoiler, shown).
    if (job.nsfw_notice) frag.appendChild(el("div", "job-note nsfw-note", job.nsfw_notice));

    const links = el("div", "links");
    links.appendChild(el("span", "links-label", "Full size:"));
    const pairA = el("a", null, "pair");
    pairA.href = job.image_url;
    pairA.target = "_blank";
    pairA.rel = "noopener";
    links.appendChild(pairA);
    for (const r of job.images || []) {
      (r.urls || []).forEach((url, i) => {
        const a = el("a", null, engineTitle(r.engine) + (r.urls.length > 1 ? ` #${i + 1}` : ""));
        a.href = url;
        a.target = "_blank";
        a.rel = "noopener";
        a.className = "engine-link";
        a.dataset.engine = r.engine;
        links.appendChild(a);
      });
    }
    frag.appendChild(links);
    if (job.buttons && job.buttons.length) frag.appendChild(buttonRows(job.buttons));
    return frag;
  }

  // The engine's latest estimate while it draws (diffusion), until the result replaces it.
  function renderPreview(box, job) {
    const url = job.status === "running" ? job.preview_url : null;
    if (!url || !/^\/api\/jobs\/[0-9a-f]{16}\/preview\.png\?step=\d+$/.test(url)) {
      box.replaceChildren();
      return;
    }
    let img = box.querySelector("img");
    if (!img) {
      img = el("img", "preview");
      img.alt = "Preview of the picture being drawn";
      img.decoding = "async";
      box.replaceChildren(img);
    }
    if (img.getAttribute("src") !== url) img.src = url;
  }

  /* ---------- result buttons: U-n, V-n, reroll, Info, Remix, Upscale ---------- */

  function buttonRows(rows) {
    const box = el("div", "result-buttons");
    for (const row of rows) {
      const line = el("div", "button-row");
      for (const b of row) {
        const button = el("button", "result-button", b.label);
        button.type = "button";
        button.dataset.data = String(b.data);
        button.addEventListener("click", () => pressButton(button));
        line.appendChild(button);
      }
      box.appendChild(line);
    }
    return box;
  }

  async function pressButton(button, extra = {}) {
    const data = button.dataset.data;
    button.disabled = true;
    try {
      const res = await fetch(`/api/conversations/${encodeURIComponent(conversationId)}/buttons`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ data, ...extra }),
      });
      const body = await res.json().catch(() => ({}));
      if (res.ok && body.job) append(trackJob(body.job), true);
      else if (res.ok && body.picked) append(pickedBubble(body.picked), true);
      else if (res.ok && body.remix) openRemix(button, body.remix);
      else if (res.ok && body.message) append(botBubble(String(body.message)), true);
      else append(botBubble(body.error || `The server answered ${res.status}.`, { error: true }), true);
      return res.ok;
    } catch (_) {
      append(botBubble("Could not reach the server. Try the button again in a moment.", { error: true }), true);
      return false;
    } finally {
      button.disabled = false;
    }
  }

  // ✏️ Remix: an edit box under the result, prefilled with the prompt; sending it queues the remix.
  function openRemix(button, remix) {
    const holder = button.closest(".result-buttons");
    const old = holder.querySelector(".remix-box");
    if (old) old.remove();
    const box = el("form", "remix-box");
    const field = el("input", "remix-prompt");
    field.type = "text";
    field.maxLength = 1200;
    field.value = String(remix.prompt || "");
    field.setAttribute("aria-label", `New prompt for picture ${Number(remix.index) + 1}`);
    const go = el("button", "result-button", "Remix");
    go.type = "submit";
    go.dataset.data = button.dataset.data;
    const close = el("button", "ghost small", "Cancel");
    close.type = "button";
    close.addEventListener("click", () => box.remove());
    box.append(field, go, close);
    box.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (await pressButton(go, { prompt: field.value })) box.remove();
    });
    holder.appendChild(box);
    field.focus();
    field.select();
  }

  // U-n: the picked picture(s), full size, with the buttons under a single picture.
  function pickedBubble(picked, ts) {
    const li = botBubble(String(picked.text || ""), { ts });
    li.classList.add("picked");
    const body = li.querySelector(".bubble");
    const grid = el("div", "picked-pictures");
    for (const p of picked.pictures || []) {
      if (!/^\/api\/jobs\/[0-9a-f]{16}\/images\/[a-z-]+-\d+\.png$/.test(String(p.url))) continue;
      const link = el("a", "pair-link");
      link.href = p.url;
      link.target = "_blank";
      link.rel = "noopener";
      const img = el("img", "pair picked-picture");
      img.alt = `${engineTitle(p.engine)} ${p.version}, picture ${Number(picked.index) + 1}`;
      img.width = p.width;
      img.height = p.height;
      img.addEventListener("load", () => img.classList.add("loaded"));
      img.src = p.url;
      link.appendChild(img);
      if (p.spoiler) {
        link.classList.add("spoiler");
        link.appendChild(el("span", "spoiler-label", "Flagged picture — click to show"));
        link.addEventListener("click", (ev) => {
          if (!link.classList.contains("spoiler")) return;
          ev.preventDefault();
          link.classList.remove("spoiler");
        });
      }
      grid.appendChild(link);
    }
    body.appendChild(grid);
    if (picked.buttons && picked.buttons.length) body.appendChild(buttonRows(picked.buttons));
    return li;
  }

  // /show <job>: the job's result again, with its buttons.
  function shownBubble(job, ts) {
    const li = el("li", "message bot job shown");
    li.title = timeLabel(ts);
    li.dataset.shownJob = job.id;
    const body = el("div", "bubble");
    body.appendChild(el("div", "job-prompt", `“${job.prompt}” · job ${job.id}`));
    const result = el("div", "job-result");
    if (job.status === "done" && job.image_url) result.appendChild(renderResult(job));
    else result.appendChild(el("div", "job-error", job.error || statusText(job)));
    body.appendChild(result);
    li.appendChild(body);
    return li;
  }

  function updateElapsed(entry) {
    const job = entry.job;
    const out = entry.li.querySelector(".elapsed");
    if (!job || FINISHED.has(job.status) || !entry.createdAt) {
      out.textContent = "";
      return;
    }
    const secs = Math.max(0, Math.round(Date.now() / 1000 - entry.createdAt));
    out.textContent = secs >= 2 ? `${secs} s` : "";
  }

  setInterval(() => {
    for (const entry of jobs.values()) updateElapsed(entry);
  }, 1000);

  function settled(job) {
    // done jobs wait for delivery (the image joins the thread then); failures show at once.
    return FINISHED.has(job.status) && (job.delivered || job.status !== "done");
  }

  function schedulePoll(id, delay) {
    const entry = jobs.get(id);
    if (!entry) return;
    if (streamLive) delay = Math.max(delay, SAFETY_POLL_MS); // the event stream pushes the changes
    clearTimeout(entry.timer);
    entry.timer = setTimeout(() => pollJob(id), delay);
  }

  async function pollJob(id) {
    const entry = jobs.get(id);
    if (!entry) return;
    try {
      const res = await fetch(`/api/jobs/${encodeURIComponent(id)}`, { cache: "no-store" });
      if (res.status === 404) {
        entry.li.dataset.status = "failed";
        entry.li.classList.remove("pending");
        entry.li.querySelector(".status").textContent = "Expired";
        entry.li.querySelector(".job-error").textContent = "This job has expired.";
        entry.li.querySelector(".cancel").hidden = true;
        entry.li.querySelector(".meter").hidden = true;
        return;
      }
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const { job } = await res.json();
      if (jobs.get(id) !== entry) return; // conversation switched meanwhile
      entry.misses = 0;
      renderJob(job);
      if (settled(job)) return;
      // Gentle polling: quick at first, then slower; slower still in a background tab.
      entry.delay = job.status === "running" ? 900 : Math.min(entry.delay * 1.3, 2000);
      schedulePoll(id, document.hidden ? 5000 : entry.delay);
    } catch (_) {
      entry.misses += 1;
      setHealth(false);
      schedulePoll(id, Math.min(15000, 1000 * 2 ** entry.misses));
    }
  }

  function trackJob(job, ts) {
    const li = createJobBubble(job, ts);
    if (!settled(job)) {
      schedulePoll(job.id, 400);
      openStream();
    }
    return li;
  }

  /* ---------- push: Server-Sent Events while jobs are pending, polling as the fallback ---------- */

  let stream = null; // the EventSource, open while this page waits on a job
  let streamLive = false; // connected: polling slows down to a rare check
  const SAFETY_POLL_MS = 5000;

  function pendingEntries() {
    return [...jobs.values()].filter((entry) => entry.job && !settled(entry.job));
  }

  function openStream() {
    if (!PUSH || stream) return;
    const pending = pendingEntries();
    if (!pending.length) return;
    // Jobs that settle before the stream connects come with it: the server sends what settled since.
    const since = Math.floor(Math.min(...pending.map((e) => e.createdAt || Date.now() / 1000)) * 1000);
    const cid = encodeURIComponent(conversationId);
    const source = new EventSource(`/api/conversations/${cid}/events?since=${since}`);
    stream = source;
    source.addEventListener("open", () => {
      if (stream !== source) return;
      streamLive = true;
      for (const entry of pendingEntries()) schedulePoll(entry.job.id, SAFETY_POLL_MS);
    });
    for (const kind of ["status", "progress", "result"]) {
      source.addEventListener(kind, (ev) => {
        if (stream === source) onPushedJob(JSON.parse(ev.data));
      });
    }
    source.addEventListener("notice", (ev) => {
      if (stream === source) showNotice(JSON.parse(ev.data));
    });
    source.addEventListener("idle", () => closeStream());
    source.addEventListener("error", () => {
      if (stream !== source) return;
      // Refused (too many streams, an error): poll from now on. Reconnecting: poll meanwhile.
      if (source.readyState === EventSource.CLOSED) stream = null;
      streamLive = false;
      for (const entry of pendingEntries()) schedulePoll(entry.job.id, 50);
    });
  }

  function closeStream() {
    if (stream) stream.close();
    stream = null;
    streamLive = false;
    for (const entry of pendingEntries()) schedulePoll(entry.job.id, 50);
  }

  function onPushedJob(job) {
    setHealth(true);
    if (!jobs.has(job.id)) {
      append(trackJob(job)); // sent from another tab of this conversation
    } else {
      jobs.get(job.id).misses = 0;
      renderJob(job);
    }
    if (!pendingEntries().length) closeStream();
  }

  const noticesShown = new Set(); // training notices already in the thread (ts|text)
  function showNotice(m) {
    const key = `${m.ts}|${m.text}`;
    if (noticesShown.has(key)) return;
    noticesShown.add(key);
    const text = String(m.text ?? "");
    append(m.image_url ? botImageBubble(text, String(m.image_url), m.ts) : botBubble(text, { ts: m.ts }));
  }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) return;
    for (const [id, entry] of jobs) {
      if (entry.job && !settled(entry.job)) schedulePoll(id, 50);
    }
  });

  async function cancelJob(id, button) {
    button.disabled = true;
    button.textContent = "Cancelling…";
    try {
      const res = await fetch(`/api/jobs/${encodeURIComponent(id)}/cancel`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ conversation_id: conversationId }),
      });
      const data = await res.json().catch(() => ({}));
      if (res.ok && data.job) {
        renderJob(data.job);
        schedulePoll(id, 500);
      } else {
        append(botBubble(data.error || `Could not cancel (HTTP ${res.status}).`, { error: true }));
        schedulePoll(id, 50);
      }
    } catch (_) {
      append(botBubble("Could not reach the server to cancel. Try again in a moment.", { error: true }));
    } finally {
      button.disabled = false;
      button.textContent = "Cancel";
    }
  }

  /* ---------- sending ---------- */

  const sent = []; // prompts sent this session, for ArrowUp recall
  let recall = -1;

  async function send(text) {
    sent.push(text);
    recall = -1;
    const picture = attached;
    clearAttachment();
    append(userBubble(text, undefined, picture ? URL.createObjectURL(picture) : undefined), true);
    const placeholder = append(botBubble("Sending…"), true);
    placeholder.classList.add("sending");
    let res;
    let data = {};
    try {
      const post = () => {
        const body = { conversation_id: conversationId, text };
        // Beyond localhost the server wants the admin password with /retrain, /dataset, /nsfw and
        // /model (not /models) (kept for this tab only).
        const password = sessionStorage.getItem(ADMIN_PASSWORD_KEY);
        if (/^\s*\/(retrain|dataset|nsfw|model(\s|$))/i.test(text) && password) body.admin_password = password;
        if (picture) {
          // The same fields as multipart/form-data, with the picture as file "image".
          const formData = new FormData();
          for (const [key, value] of Object.entries(body)) formData.append(key, value);
          formData.append("image", picture, picture.name || "picture");
          return fetch("/api/imagine", { method: "POST", body: formData });
        }
        return fetch("/api/imagine", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(body),
        });
      };
      res = await post();
      data = await res.json().catch(() => ({}));
      if (data.code === "bad_admin_password") {
        const password = window.prompt("Admin password for /retrain:");
        if (password) {
          sessionStorage.setItem(ADMIN_PASSWORD_KEY, password);
          res = await post();
          data = await res.json().catch(() => ({}));
        }
      }
    } catch (_) {
      placeholder.replaceWith(
        botBubble("Could not reach the imaginebot server. Is it running? Your prompt is back in the box.", {
          error: true,
        }),
      );
      setHealth(false);
      if (!input.value) input.value = text;
      if (picture && !attached) attach(picture);
      return;
    }
    setHealth(true);
    if (res.ok && data.job) {
      placeholder.replaceWith(trackJob(data.job));
    } else if (res.ok && data.shown) {
      placeholder.replaceWith(shownBubble(data.shown)); // /show <job>
    } else if (res.ok && data.message) {
      // An accepted command that is not a drawing job (an admin's /retrain); its progress and
      // result arrive as bot messages in this conversation's history.
      const bubble = botBubble(String(data.message));
      // /dataset show: the dataset's contact sheet, inline.
      if (typeof data.sheet === "string" && data.sheet.startsWith("data:image/png;base64,")) {
        const sheet = el("img", "pair loaded");
        sheet.alt = "contact sheet";
        sheet.src = data.sheet;
        bubble.appendChild(sheet);
      }
      placeholder.replaceWith(bubble);
    } else {
      let msg = data.error || `The server answered ${res.status}.`;
      const retry = res.headers.get("Retry-After");
      if (retry && !/try again/i.test(msg)) msg += ` (try again in ${retry} s)`;
      placeholder.replaceWith(botBubble(msg, { error: true }));
    }
    if (nearBottom()) scrollToBottom(true);
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = input.value;
    input.value = "";
    input.focus();
    send(text); // empty text too: the server explains what a prompt needs
  });

  input.addEventListener("keydown", (ev) => {
    if (ev.key === "ArrowUp" && sent.length && (input.value === "" || recall >= 0)) {
      ev.preventDefault();
      recall = recall < 0 ? sent.length - 1 : Math.max(0, recall - 1);
      input.value = sent[recall];
    } else if (ev.key === "ArrowDown" && recall >= 0) {
      ev.preventDefault();
      recall += 1;
      if (recall >= sent.length) {
        recall = -1;
        input.value = "";
      } else {
        input.value = sent[recall];
      }
    } else if (ev.key === "Escape") {
      input.value = "";
      recall = -1;
    }
  });

  /* ---------- a picture to draw from: the button, or drag and drop ---------- */

  let attached = null; // the File sent with the next prompt
  let attachedUrl = null;

  function attach(file) {
    if (!file) return;
    if (file.size > MAX_UPLOAD_BYTES) {
      const mb = (file.size / (1024 * 1024)).toFixed(1);
      append(botBubble(`The image is ${mb} MB; the limit is 10.0 MB.`, { error: true }), true);
      return;
    }
    clearAttachment();
    attached = file;
    attachedUrl = URL.createObjectURL(file);
    $("#attachment-thumb").src = attachedUrl;
    $("#attachment-name").textContent = file.name || "picture";
    attachmentEl.hidden = false;
    input.focus();
  }

  function clearAttachment() {
    attached = null;
    if (attachedUrl) URL.revokeObjectURL(attachedUrl);
    attachedUrl = null;
    $("#attachment-thumb").removeAttribute("src");
    attachmentEl.hidden = true;
  }

  attachBtn.addEventListener("click", () => fileInput.click());
  fileInput.addEventListener("change", () => {
    attach(fileInput.files[0]);
    fileInput.value = "";
  });
  $("#attachment-remove").addEventListener("click", () => {
    clearAttachment();
    input.focus();
  });

  const carriesFiles = (ev) => Boolean(ev.dataTransfer) && [...ev.dataTransfer.types].includes("Files");
  let dragDepth = 0;
  document.addEventListener("dragenter", (ev) => {
    if (!carriesFiles(ev)) return;
    dragDepth += 1;
    dropZone.hidden = false;
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) dropZone.hidden = true;
  });
  document.addEventListener("dragover", (ev) => {
    if (carriesFiles(ev)) ev.preventDefault(); // allows the drop
  });
  document.addEventListener("drop", (ev) => {
    if (!carriesFiles(ev)) return;
    ev.preventDefault(); // not: the browser opening the file
    dragDepth = 0;
    dropZone.hidden = true;
    attach(ev.dataTransfer.files[0]);
  });

  // Flag hints and example prompts fill the input.
  for (const code of document.querySelectorAll(".hint code[data-flag]")) {
    code.tabIndex = 0;
    code.setAttribute("role", "button");
    code.title = "Add to prompt";
    const add = () => {
      const flag = code.dataset.flag;
      input.value = (input.value.trimEnd() + " " + flag).trimStart();
      input.focus();
    };
    code.addEventListener("click", add);
    code.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        add();
      }
    });
  }
  for (const ex of document.querySelectorAll(".example")) {
    ex.addEventListener("click", () => {
      input.value = ex.textContent;
      input.focus();
    });
  }

  /* ---------- lightbox ---------- */

  function openLightbox(url, alt) {
    lightboxImg.src = url;
    lightboxImg.alt = alt || "";
    lightboxOpen.href = url;
    lightbox.showModal();
  }
  lightbox.addEventListener("click", (ev) => {
    if (ev.target === lightbox || ev.target === lightboxImg) lightbox.close();
  });
  lightbox.addEventListener("close", () => {
    lightboxImg.removeAttribute("src");
  });

  /* ---------- history & health ---------- */

  function resetThread() {
    if (stream) stream.close();
    stream = null;
    streamLive = false;
    for (const entry of jobs.values()) clearTimeout(entry.timer);
    jobs.clear();
    messagesEl.replaceChildren();
    updateWelcome();
  }

  async function loadHistory() {
    messagesEl.setAttribute("aria-busy", "true");
    try {
      const res = await fetch(`/api/conversations/${encodeURIComponent(conversationId)}`, { cache: "no-store" });
      const data = await res.json().catch(() => ({}));
      if (!res.ok) throw new Error(data.error || `HTTP ${res.status}`);
      setHealth(true);
      for (const m of data.messages || []) {
        if (m.role === "user") {
          messagesEl.appendChild(userBubble(String(m.text ?? ""), m.ts, m.image === true));
        } else if (m.role === "job" && m.job) {
          messagesEl.appendChild(trackJob(m.job, m.ts));
        } else if (m.role === "shown" && m.job) {
          messagesEl.appendChild(shownBubble(m.job, m.ts));
        } else if (m.role === "picked" && m.picked) {
          messagesEl.appendChild(pickedBubble(m.picked, m.ts));
        } else if (m.role === "bot" && m.image_url) {
          noticesShown.add(`${m.ts}|${m.text}`);
          messagesEl.appendChild(botImageBubble(String(m.text ?? ""), String(m.image_url), m.ts));
        } else if (m.role === "bot") {
          noticesShown.add(`${m.ts}|${m.text}`);
          // Answers to bad input carry an error code; notices (training progress, expiry) do not.
          messagesEl.appendChild(botBubble(String(m.text ?? ""), { error: Boolean(m.code), ts: m.ts }));
        }
      }
    } catch (err) {
      setHealth(false);
      messagesEl.appendChild(
        botBubble(`Could not load this conversation's history (${err.message}). New prompts still work.`, {
          error: true,
        }),
      );
    } finally {
      messagesEl.removeAttribute("aria-busy");
      updateWelcome();
      scrollToBottom(false);
    }
  }

  let healthDetail = "online";
  let healthProblems = []; // processes `imaginebot up` gave up on (from /api/health)
  function setHealth(ok, detail) {
    if (detail) healthDetail = detail;
    const problem = ok && healthProblems.length > 0;
    healthEl.classList.toggle("ok", ok === true && !problem);
    healthEl.classList.toggle("down", ok === false || problem);
    if (!ok) {
      healthEl.title = "Cannot reach the server";
      healthEl.textContent = "offline";
    } else if (problem) {
      healthEl.title = healthProblems.join("\n");
      healthEl.textContent = `${healthDetail} — a process is down`;
    } else {
      healthEl.title = `Connected — engines: ${healthDetail}`;
      healthEl.textContent = healthDetail;
    }
  }

  async function checkHealth() {
    try {
      const res = await fetch("/api/health", { cache: "no-store" });
      const data = await res.json();
      if (!res.ok || !data.ok) throw new Error();
      const engines = (data.engines || []).join(" + ");
      healthProblems = data.problems || [];
      setHealth(true, engines || "online");
    } catch (_) {
      setHealth(false);
    }
  }

  $("#new-chat").addEventListener("click", () => {
    conversationId = getConversationId(true);
    sent.length = 0;
    resetThread();
    input.focus();
  });

  updateWelcome();
  checkHealth();
  loadHistory();
  input.focus();
})();
