// Earmark's browser side: keyboard shortcuts, playback speed/loop, spectrogram playhead and seek,
// and the Review tab's prefetched clip window (emReview). Loaded once in <head>; works on whatever
// clip view is on screen.
(function () {
  const SPEEDS = [0.5, 0.75, 1, 1.25, 1.5, 2];
  window.emSpeed = window.emSpeed || 1;
  window.emLoop = window.emLoop || false;

  function visible(el) { return el && el.offsetParent !== null; }
  function currentPlayer() {
    return Array.from(document.querySelectorAll(".em-player")).find(visible) || null;
  }
  function currentAudio() { const p = currentPlayer(); return p ? p.querySelector(".em-audio") : null; }
  function setSpeed(speed) {
    window.emSpeed = speed;
    document.querySelectorAll(".em-audio").forEach(a => { a.playbackRate = speed; });
    document.querySelectorAll(".em-speed").forEach(s => { s.value = String(speed); });
    flash(`speed ${speed}x`);
  }
  function setLoop(loop) {
    window.emLoop = loop;
    document.querySelectorAll(".em-audio").forEach(a => { a.loop = loop; });
    document.querySelectorAll(".em-loop").forEach(c => { c.checked = loop; });
    flash(loop ? "loop on" : "loop off");
  }
  function flash(text) {
    let note = document.getElementById("em-flash");
    if (!note) {
      note = document.createElement("div");
      note.id = "em-flash";
      document.body.appendChild(note);
    }
    note.textContent = text;
    note.classList.add("em-show");
    clearTimeout(note._timer);
    note._timer = setTimeout(() => note.classList.remove("em-show"), 900);
  }

  // New audio elements take the chosen speed and loop as soon as they load.
  document.addEventListener("loadedmetadata", (event) => {
    if (event.target.classList && event.target.classList.contains("em-audio")) {
      event.target.playbackRate = window.emSpeed;
      event.target.loop = window.emLoop;
      const player = event.target.closest(".em-player");
      if (player) {
        const speed = player.querySelector(".em-speed"); if (speed) speed.value = String(window.emSpeed);
        const loop = player.querySelector(".em-loop"); if (loop) loop.checked = window.emLoop;
      }
    }
  }, true);
  document.addEventListener("change", (event) => {
    if (event.target.classList.contains("em-speed")) setSpeed(parseFloat(event.target.value));
    if (event.target.classList.contains("em-loop")) setLoop(event.target.checked);
  });
  // Click on the spectrogram seeks there.
  document.addEventListener("click", (event) => {
    const spec = event.target.closest && event.target.closest(".em-spec");
    if (!spec) return;
    const audio = spec.closest(".em-player").querySelector(".em-audio");
    const box = spec.getBoundingClientRect();
    const fraction = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
    if (audio && isFinite(audio.duration)) audio.currentTime = fraction * audio.duration;
  });
  // The playhead follows the audio element's clock.
  function tick() {
    document.querySelectorAll(".em-player").forEach(player => {
      const audio = player.querySelector(".em-audio");
      const head = player.querySelector(".em-playhead");
      const duration = parseFloat(player.dataset.duration) || (audio && audio.duration) || 1;
      if (audio && head) {
        head.style.left = `${Math.min(100, 100 * audio.currentTime / duration)}%`;
        head.style.display = audio.currentTime > 0 ? "block" : "none";
      }
    });
    requestAnimationFrame(tick);
  }
  requestAnimationFrame(tick);

  // ---- Review: optimistic advance over a prefetched window, decisions queued in order ----------
  // The server sends a window of clip views (the one to show and the next few) through a hidden
  // feed; a decision key shows the next clip at once and queues the decision with a sequence
  // number. One batch is in flight at a time: Gradio hands the queue to the server when the
  // hidden send button is clicked (take), and its answer comes back through receive(). The
  // server applies each sequence number once, in order, so nothing is lost or recorded twice; a
  // failed write puts its clip back with the reason.
  const ENTER_NAME = "Enter your name (top right) before recording decisions: every decision is signed.";
  const RESEND_MS = 10000;  // an answer this late is asked for again (applied sequence numbers are skipped)
  const review = {
    seq: 0, pending: [], ids: [], pos: 0, inflight: null, waiting: 0, lastResponse: null, shown: null, started: false,
    missing: false,
    stage() { return document.querySelector("#em-review-stage .em-stage"); },
    slots() { const s = this.stage(); return s ? s.querySelector(".em-slots") : null; },
    active() { const s = this.stage(); return !!s && visible(s); },
    nameBox() { return document.querySelector("#em-annotator textarea, #em-annotator input"); },
    message(text, kind) {
      const box = document.querySelector("#em-review-message .em-msg");
      if (!box) return;
      box.className = `em-msg em-message-${kind || "ok"}`;
      box.textContent = text;
    },
    // Where the server will be once every queued command is applied (mirrors the server's rule).
    expectedPos() {
      let pos = this.pos;
      for (const c of this.pending) {
        if (c.kind === "decide" && this.ids[pos] === c.clip) pos += 1;
        else if (c.kind === "goto") pos = this.ids.indexOf(c.clip);
      }
      return pos;
    },
    show() {
      const box = this.slots();
      if (!box) return;
      const pos = this.expectedPos();
      const clip = pos < this.ids.length ? this.ids[pos] : null;
      let target = clip === null ? box.querySelector(".em-end") : box.querySelector(`.em-slot[data-clip="${clip}"]`);
      if (!target) target = box.querySelector(".em-loading") || this.placeholder(box);
      for (const slot of box.children) {
        if (slot === target) continue;
        slot.hidden = true;
        slot.querySelectorAll("audio").forEach(a => a.pause());
      }
      target.hidden = false;
      this.shown = target;
    },
    placeholder(box) {
      const el = document.createElement("div");
      el.className = "em-slot em-loading";
      el.innerHTML = "<p>Loading the next clip&hellip;</p>";
      box.appendChild(el);
      return el;
    },
    slotFrom(html, cls, data) {
      const el = document.createElement("div");
      el.className = `em-slot ${cls}`;
      Object.assign(el.dataset, data);
      el.innerHTML = html;
      el.hidden = true;
      el.querySelectorAll("img").forEach(img => { if (img.decode) img.decode().catch(() => {}); });
      return el;
    },
    // New slots from the feed; held ones are kept by key. The clip on screen keeps its element
    // (its audio keeps playing, and the decision id it was seen at stays the one checked for
    // conflicts) unless the answer says to re-render (undo, a failed write, a new queue).
    merge(data) {
      const box = this.slots();
      const held = new Map();
      for (const el of box.querySelectorAll(".em-slot[data-clip]")) held.set(el.dataset.clip, el);
      const next = [];
      for (const slot of data.slots) {
        const el = held.get(String(slot.clip));
        if (el && el === this.shown && !data.reset) {
          if (el.dataset.key !== slot.key) el.dataset.stale = "1";
          next.push(el);
        } else if (el && el.dataset.key === slot.key && !el.dataset.stale) next.push(el);
        else if (slot.html !== null) next.push(this.slotFrom(slot.html, "", {key: slot.key, clip: slot.clip, seen: slot.seen}));
        else this.missing = true;  // dropped here after the batch was taken: asked for again below
      }
      if (data.end !== null) next.push(this.slotFrom(data.end, "em-end", {}));
      box.replaceChildren(...next);
      if (this.shown && !next.includes(this.shown)) this.shown = null;
    },
    have() {
      const box = this.slots();
      return box ? Array.from(box.querySelectorAll(".em-slot[data-key]:not([data-stale])")).map(el => el.dataset.key) : [];
    },
    // Called by Gradio (the send button's js) for the batch to apply: every command not yet
    // acknowledged, so a resent batch carries what may have been lost.
    take() {
      this.inflight = {upTo: this.seq, at: performance.now()};
      return JSON.stringify({commands: this.pending, have: this.have()});
    },
    flush() {
      if (this.inflight || !this.pending.length) return;
      this.inflight = {upTo: this.seq, at: performance.now()};  // before the click: Gradio calls take() later
      const send = document.getElementById("em-review-send");
      if (send) (send.tagName === "BUTTON" ? send : send.querySelector("button") || send).click();
    },
    push(command) {
      command.seq = ++this.seq;
      this.pending.push(command);
      setTimeout(() => this.flush(), 0);
      return command;
    },
    // An answer from the server: ack = it answers this page's batch (else a new queue or window).
    receive(raw, ack) {
      let data = null;
      try { data = JSON.parse(raw || "null"); } catch (e) { data = null; }
      if (!data || data.response === this.lastResponse) {
        if (ack && this.inflight) this.refused();
        return;
      }
      this.lastResponse = data.response;
      const failed = data.results.find(r => !r.ok);
      this.pending = this.pending.filter(c => c.seq > data.applied);
      if (failed) {
        const later = this.pending.length + data.results.filter(r => !r.ok).length - 1;
        this.pending = [];
        this.message(`${failed.text}${failed.clip != null ? ". Nothing was recorded: the clip is shown again as it stands now" : ""}`
          + (later ? `; ${later} later key press${later > 1 ? "es were" : " was"} not recorded either` : ""), "error");
      } else {
        const done = data.results.filter(r => r.text).pop();
        if (done && !this.pending.length) this.message(done.text, "ok");
      }
      if (this.inflight && data.applied >= this.inflight.upTo) this.inflight = null;
      if (this.waiting && data.applied >= this.waiting) this.waiting = 0;
      this.ids = data.ids;
      this.pos = data.pos;
      this.merge(data);
      const counter = this.stage().querySelector(".em-counter-box");
      if (counter) counter.innerHTML = data.counter;
      this.show();
      if (!this.started) { this.started = true; this.askName(); }
      if (this.missing && !this.pending.length && this.pos < this.ids.length) this.push({kind: "goto", clip: this.ids[this.pos]});
      this.missing = false;
      setTimeout(() => this.flush(), 0);
    },
    // The server refused the whole batch (its toast says why): nothing was applied, so the clip
    // of the first queued command is on screen again and the queue is cleared.
    refused() {
      this.inflight = null;
      this.waiting = 0;
      const lost = this.pending.length;
      this.pending = [];
      this.show();
      this.message(`Not recorded (see the message top right): ${lost} key press${lost === 1 ? "" : "es"} dropped; the clip is shown again.`, "error");
    },
    askName() {
      const box = this.nameBox();
      if (box && !box.value.trim() && !box.disabled && !box.readOnly) {
        box.focus();
        this.message("Enter your name (top right) to start: every decision is signed.", "ask");
      }
    },
    ready() {
      if (this.waiting) { this.message("One moment: the last command is on its way.", "pending"); return false; }
      const box = this.nameBox();
      if (box && !box.value.trim() && !box.disabled && !box.readOnly) {
        box.focus();
        this.message(ENTER_NAME, "error");
        return false;
      }
      return true;
    },
    currentClip() {
      return this.shown && this.shown.dataset.clip ? this.shown : null;
    },
    decide(action, extra, describe) {
      if (!this.ready()) return;
      const slot = this.currentClip();
      if (!slot) {
        this.message(this.shown && this.shown.classList.contains("em-end")
          ? "The queue is done: nothing left to decide here. Load another queue, or press K to go back."
          : "One moment: the next clip is loading.", "pending");
        return;
      }
      const note = document.querySelector("#em-review-note textarea, #em-review-note input");
      const text = note ? note.value : "";
      if (note && text) { note.value = ""; note.dispatchEvent(new Event("input", {bubbles: true})); }
      const clip = Number(slot.dataset.clip);
      this.push({kind: "decide", clip, seen: Number(slot.dataset.seen), action, note: text, ...extra});
      this.message(`saving: clip ${clip} ${describe}\u2026`, "pending");  // the server's answer replaces it
      this.show();
    },
    tag(key) {
      const legend = document.querySelector("#em-review-keys .em-keys");  // redrawn when the rules change
      const keys = JSON.parse((legend && legend.dataset.keys) || "{}");
      if (!(key in keys)) return false;
      this.decide("tag", {tag: keys[key]}, `tagged ${keys[key]}`);
      return true;
    },
    relabel() {
      const box = document.querySelector("#em-relabel-to input");
      const label = box ? box.value.trim() : "";
      if (!label) { this.message("Choose a class in 'relabel to' first.", "error"); if (box) box.focus(); return; }
      this.decide("relabel", {label}, `relabelled ${label}`);
    },
    step(delta) {
      if (this.waiting) { this.message("One moment: the last command is on its way.", "pending"); return; }
      const pos = this.expectedPos();
      const clip = this.ids[pos + delta];
      if (clip === undefined) { this.message(delta > 0 ? "This is the last clip of the queue." : "This is the first clip of the queue.", "pending"); return; }
      const command = this.push({kind: "goto", clip});
      if (delta < 0) this.waiting = command.seq;  // the previous clip is not held: shown when it comes
      this.show();
    },
    undo() {
      if (!this.ready()) return;
      this.waiting = this.push({kind: "undo"}).seq;
      this.message("Undoing your last decision\u2026", "pending");
    },
    tick() {
      if (this.inflight && performance.now() - this.inflight.at > RESEND_MS) { this.inflight = null; this.flush(); }
    },
  };
  window.emReview = review;
  setInterval(() => review.tick(), 1000);

  // The Review buttons act through the same queue as the keys.
  const REVIEW_BUTTONS = {"em-exclude": () => review.decide("exclude", {}, "excluded"),
    "em-keep": () => review.decide("keep", {}, "kept in quarantine"), "em-undo": () => review.undo(),
    "em-prev": () => review.step(-1), "em-next": () => review.step(1), "em-relabel": () => review.relabel()};
  document.addEventListener("click", (event) => {
    const open = event.target.closest && event.target.closest(".em-open-tab");
    if (open) {
      event.preventDefault();
      const tab = Array.from(document.querySelectorAll("button[role=tab]")).find(b => b.textContent.trim() === open.dataset.tab);
      if (tab) tab.click();
      return;
    }
    const resolve = event.target.closest && event.target.closest(".em-dup-resolve");  // a near-duplicate's way out
    if (resolve && review.active()) {
      review.decide(resolve.dataset.resolution, {partner: Number(resolve.dataset.partner)}, resolve.textContent.trim());
      return;
    }
    const button = event.target.closest && event.target.closest("[id^=em-tag-], #" + Object.keys(REVIEW_BUTTONS).join(", #"));
    if (!button || !review.active()) return;
    if (button.id.startsWith("em-tag-")) review.tag(button.id.slice("em-tag-".length));
    else REVIEW_BUTTONS[button.id]();
  });

  const REVIEW_KEYS = {j: () => review.step(1), ArrowRight: () => review.step(1), k: () => review.step(-1),
    ArrowLeft: () => review.step(-1), u: () => review.undo(), x: () => review.decide("exclude", {}, "excluded"),
    q: () => review.decide("keep", {}, "kept in quarantine")};
  function reviewKey(key) {
    if (review.tag(key)) return true;
    if (!(key in REVIEW_KEYS)) return false;
    REVIEW_KEYS[key]();
    return true;
  }

  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.target.closest && event.target.closest("#em-annotator")) {
      event.target.blur();  // the name is in: the next key decides
      return;
    }
    const tag = (event.target.tagName || "").toLowerCase();
    if (["input", "textarea", "select"].includes(tag) || event.target.isContentEditable) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    let handled = review.active() && reviewKey(key);
    if (handled) return event.preventDefault();
    if (key === " ") {
      const audio = currentAudio();
      if (audio) { audio.paused ? audio.play() : audio.pause(); handled = true; }
    } else if (key === "]" || key === "[") {
      const i = SPEEDS.indexOf(window.emSpeed);
      const next = SPEEDS[Math.max(0, Math.min(SPEEDS.length - 1, (i < 0 ? 2 : i) + (key === "]" ? 1 : -1)))];
      setSpeed(next); handled = true;
    } else if (key === "l") { setLoop(!window.emLoop); handled = true; }
    else if (key === "r") {
      const audio = currentAudio();
      if (audio) { audio.currentTime = 0; audio.play(); handled = true; }
    }
    if (handled) event.preventDefault();
  });
})();
