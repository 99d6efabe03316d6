// Earmark's browser side: keyboard shortcuts, playback speed/loop, spectrogram playhead and seek.
// Loaded once in <head>; works on whatever clip view is on screen (the HTML is re-rendered per clip).
(function () {
  const SPEEDS = [0.5, 0.75, 1, 1.25, 1.5, 2];
  window.emSpeed = window.emSpeed || 1;
  window.emLoop = window.emLoop || false;

  function visible(el) { return el && el.offsetParent !== null; }
  function currentPlayer() {
    return Array.from(document.querySelectorAll(".em-player")).find(visible) || null;
  }
  function currentAudio() { const p = currentPlayer(); return p ? p.querySelector(".em-audio") : null; }
  function clickVisible(id) {
    const root = document.getElementById(id);
    if (!visible(root)) return false;
    const button = root.tagName === "BUTTON" ? root : root.querySelector("button") || root;
    button.click();
    return true;
  }
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

  document.addEventListener("keydown", (event) => {
    const tag = (event.target.tagName || "").toLowerCase();
    if (["input", "textarea", "select"].includes(tag) || event.target.isContentEditable) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    let handled = false;
    if (/^[1-9]$/.test(key)) handled = clickVisible(`em-tag-${key}`);
    else if (key === "j" || key === "ArrowRight") handled = clickVisible("em-next");
    else if (key === "k" || key === "ArrowLeft") handled = clickVisible("em-prev");
    else if (key === "u") handled = clickVisible("em-undo");
    else if (key === "x") handled = clickVisible("em-exclude");
    else if (key === "q") handled = clickVisible("em-keep");
    else if (key === " ") {
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
