(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("ab-data").textContent);
  const pairs = data.pairs;
  const storeKey = "humanfix-ab-" + data.report_id;
  const $ = (id) => document.getElementById(id);
  let choices = {};
  try { choices = JSON.parse(localStorage.getItem(storeKey) || "{}") || {}; } catch (e) { choices = {}; }
  let pos = 0;
  let abOn = false;

  function save() { try { localStorage.setItem(storeKey, JSON.stringify(choices)); } catch (e) { /* private mode */ } }
  function done() { return pairs.filter((p) => choices[p.pair]).length; }
  function firstOpen(from) {
    for (let k = 0; k < pairs.length; k++) {
      const i = (from + k) % pairs.length;
      if (!choices[pairs[i].pair]) return i;
    }
    return -1;
  }
  function srcOf(imgId) { const el = $("img-" + imgId); return el ? el.getAttribute("src") : ""; }

  function render() {
    $("ab-empty").classList.toggle("hidden", pairs.length > 0);
    $("ab-main").classList.toggle("hidden", pairs.length === 0);
    if (!pairs.length) return;
    const n = done();
    if (pos < 0) {
      $("ab-progress").textContent = "All " + pairs.length + " pairs judged (" + n + "/" + pairs.length + ")." +
        " Download your choices.";
      $("ab-prompt").textContent = "";
      $("ab-left").removeAttribute("src"); $("ab-right").removeAttribute("src");
      return;
    }
    const p = pairs[pos];
    const c = choices[p.pair];
    $("ab-progress").textContent = "Pair " + (pos + 1) + " of " + pairs.length + " · judged " + n + "/" + pairs.length +
      (c ? " · this one: " + c.choice : "");
    $("ab-prompt").textContent = p.prompt + (p.negative_prompt ? "   (negative: " + p.negative_prompt + ")" : "");
    $("ab-left").src = srcOf(p.left_img);
    $("ab-right").src = srcOf(p.right_img);
    $("ab-left").classList.toggle("picked", !!c && c.choice === "left");
    $("ab-right").classList.toggle("picked", !!c && c.choice === "right");
  }

  function choose(choice) {
    if (!pairs.length || pos < 0) return;
    const p = pairs[pos];
    choices[p.pair] = { choice: choice, time: new Date().toISOString() };
    save();
    if (document.activeElement && document.activeElement.blur) document.activeElement.blur();  // space = tie only
    const next = firstOpen(pos + 1);
    pos = next;
    render();
  }
  function back() {
    if (!pairs.length) return;
    pos = pos < 0 ? pairs.length - 1 : Math.max(0, pos - 1);
    render();
  }

  function exportChoices() {
    return {
      format: "humanfix-ab-choices", version: 1, report_id: data.report_id,
      created: new Date().toISOString(), n_pairs: pairs.length,
      choices: pairs.filter((p) => choices[p.pair]).map((p) => ({
        pair: p.pair, prompt: p.prompt, negative_prompt: p.negative_prompt, seed: p.seed,
        left: p.left, right: p.right, choice: choices[p.pair].choice, time: choices[p.pair].time,
      })),
    };
  }
  function download() {
    const blob = new Blob([JSON.stringify(exportChoices(), null, 2)], { type: "application/json" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "ab-choices-" + data.report_id + ".json";
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }

  function showTab(ab) {
    abOn = ab;
    $("overview").classList.toggle("hidden", ab);
    $("ab").classList.toggle("hidden", !ab);
    $("tab-overview").classList.toggle("on", !ab);
    $("tab-ab").classList.toggle("on", ab);
    if (ab) { if (pos >= 0 && pairs.length && choices[pairs[pos].pair]) pos = firstOpen(pos); render(); }
  }

  $("tab-overview").addEventListener("click", () => showTab(false));
  $("tab-ab").addEventListener("click", () => showTab(true));
  $("choose-left").addEventListener("click", () => choose("left"));
  $("choose-right").addEventListener("click", () => choose("right"));
  $("choose-tie").addEventListener("click", () => choose("tie"));
  $("ab-back").addEventListener("click", back);
  $("ab-download").addEventListener("click", download);
  $("ab-reset").addEventListener("click", () => {
    if (confirm("Clear all choices made in this browser for this report?")) { choices = {}; save(); pos = 0; render(); }
  });
  document.addEventListener("keydown", (e) => {
    if (!abOn || e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key;
    if (k === "ArrowLeft" || k === "1") choose("left");
    else if (k === "ArrowRight" || k === "2") choose("right");
    else if (k === "ArrowDown" || k === "0" || k === " ") choose("tie");
    else if (k === "Backspace" || k === "u") back();
    else if (k === "d") download();
    else return;
    e.preventDefault();
  });

  // -- skeletons (--pose): one SVG over each image, drawn from the pose-data block; the image stays untouched
  const poseEl = $("pose-data");
  const pose = poseEl ? JSON.parse(poseEl.textContent) : null;
  const NS = "http://www.w3.org/2000/svg";
  function svgEl(name, attrs) {
    const el = document.createElementNS(NS, name);
    for (const k in attrs) el.setAttribute(k, attrs[k]);
    return el;
  }
  function drawSkeletons() {
    if (!pose) return 0;
    let drawn = 0;
    for (const imgId in pose.images) {
      const info = pose.images[imgId];
      const img = $("img-" + imgId);
      if (!img || img.parentNode.querySelector("svg.skeleton")) continue;
      const svg = svgEl("svg", { "class": "skeleton", viewBox: "0 0 " + info.w + " " + info.h,
                                  preserveAspectRatio: "none" });
      const radius = Math.max(info.w, info.h) / 100;
      for (const person of info.persons) {
        const s = person.plausibility;
        const color = s === null ? "#9e9e9e" : (s >= pose.plausible_from ? "#1a9e3a" : "#d62728");
        const kp = person.keypoints;
        const ok = (i) => kp[i][2] > 0 && kp[i][2] >= pose.min_confidence;  // counted from the threshold on, as scored
        const g = svgEl("g", { stroke: color, fill: color });
        const title = svgEl("title", {});
        title.textContent = (s === null ? "not scored (too few keypoints)" : "plausibility " + s.toFixed(2)) +
          (person.failed.length ? ": " + person.failed.join(", ") : "");
        g.appendChild(title);
        for (const [a, b] of pose.skeleton) {
          if (ok(a) && ok(b)) {
            g.appendChild(svgEl("line", { x1: kp[a][0], y1: kp[a][1], x2: kp[b][0], y2: kp[b][1],
                                          "stroke-width": 2, "vector-effect": "non-scaling-stroke" }));
          }
        }
        kp.forEach((p, i) => { if (ok(i)) g.appendChild(svgEl("circle", { cx: p[0], cy: p[1], r: radius })); });
        svg.appendChild(g);
      }
      img.parentNode.appendChild(svg);
      drawn++;
    }
    return drawn;
  }
  function showSkeletons(on) {
    if (on) drawSkeletons();
    document.body.classList.toggle("skeletons", on);
  }
  if (pose) $("show-skeletons").addEventListener("change", (e) => showSkeletons(e.target.checked));

  pos = pairs.length ? Math.max(0, firstOpen(0)) : 0;
  if (pairs.length && done() === pairs.length) pos = -1;
  if (location.hash === "#ab") showTab(true);

  function selftest() {
    choices = {}; save(); pos = 0;
    const imgs = Array.from(document.querySelectorAll("#overview img"));
    const result = {
      images: imgs.length,
      loaded: imgs.filter((i) => i.complete && i.naturalWidth > 0).length,
      pairs: pairs.length,
    };
    if (pose) {
      $("show-skeletons").click();
      const shown = Array.from(document.querySelectorAll("svg.skeleton"));
      result.skeletons = shown.filter((el) => getComputedStyle(el).display !== "none").length;
      result.skeleton_lines = document.querySelectorAll("svg.skeleton line").length;
      $("show-skeletons").click();
    }
    showTab(true);
    if (pairs.length) {
      $("choose-left").click();
      document.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowRight", bubbles: true }));
    }
    setTimeout(() => {
      const ab = [$("ab-left"), $("ab-right")];
      result.ab_loaded = ab.filter((i) => i.complete && i.naturalWidth > 0).length;
      result.progress = $("ab-progress").textContent;
      result.stored = JSON.parse(localStorage.getItem(storeKey) || "{}");
      result.export = exportChoices();
      const out = $("selftest-result");
      out.textContent = JSON.stringify(result);
      out.classList.remove("hidden");
    }, 200);
  }
  if (location.hash === "#selftest") {
    if (document.readyState === "complete") selftest(); else window.addEventListener("load", selftest);
  }
})();
