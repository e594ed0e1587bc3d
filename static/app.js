// Progressive enhancement for the elasticity strip: remembers, in this tab only, which
// replicas served its last ten pages and shows them as coloured chips, one colour per
// replica. The history lives in sessionStorage, never on the server, so a page view stays
// one Redis read. Everything on the page works without this script.
(function () {
  "use strict";
  var KEY = "elastic-cart:served-by";
  var LIMIT = 10;
  var badge = document.getElementById("served-by");
  var list = document.getElementById("replica-history");
  if (!badge || !list) return;

  // One colour per replica: each replica id gets the next hue of a palette the first time
  // this tab meets it, so the replicas of a small fleet always look different.
  var PALETTE = [160, 220, 25, 285, 340, 50, 190, 0];
  var colours = load("elastic-cart:colours", {});
  function hue(id) {
    if (!(id in colours)) colours[id] = PALETTE[Object.keys(colours).length % PALETTE.length];
    return colours[id];
  }
  function paint(element, id) {
    element.style.setProperty("--chip-hue", String(hue(id)));
  }
  function load(key, fallback) {
    try {
      return JSON.parse(sessionStorage.getItem(key)) || fallback;
    } catch (e) {
      return fallback;
    }
  }
  function save(key, value) {
    try {
      sessionStorage.setItem(key, JSON.stringify(value));
    } catch (e) {
      // Storage full or disabled: the chips show this page only.
    }
  }

  var history = load(KEY, []);
  var current = badge.textContent.trim();
  history.push(current);
  history = history.slice(-LIMIT);
  save(KEY, history);

  paint(badge, current);
  list.textContent = "";
  history.forEach(function (id, index) {
    var chip = document.createElement("li");
    chip.className = "chip" + (index === history.length - 1 ? " current" : "");
    chip.textContent = id;
    chip.title = index === history.length - 1 ? "this page" : (history.length - 1 - index) + " pages ago";
    paint(chip, id);
    list.appendChild(chip);
  });
  save("elastic-cart:colours", colours);
  list.hidden = false;
})();
