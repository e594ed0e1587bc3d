// Keeps the fleet page live: asks /api/fleet once a second (through the balancer, so a
// different replica answers each time, all reading the same heartbeats) and redraws the
// table: each replica's share of the fleet's requests/s, replicas that joined in the last
// seconds marked "joined", draining ones "draining", and vanished ones "gone" for a few
// seconds before their row goes. Without this script the page is a snapshot.
(function () {
  "use strict";
  var body = document.getElementById("fleet-replicas");
  if (!body) return;
  var count = document.getElementById("fleet-count");
  var rate = document.getElementById("fleet-rate");
  var status = document.getElementById("fleet-status");
  var POLL_MS = 1000;
  var JOINED_MS = 5000;
  var GONE_MS = 4000;
  // When this page first saw each replica, and when each vanished.
  var seen = {};
  var gone = {};
  var loaded = Date.now();
  Array.prototype.forEach.call(body.rows, function (row) {
    seen[row.dataset.replica] = 0; // there before the page: not "joined"
  });

  // The same colour per replica as the strip's chips (static/app.js).
  var PALETTE = [160, 220, 25, 285, 340, 50, 190, 0];
  function colours() {
    try {
      return JSON.parse(sessionStorage.getItem("elastic-cart:colours")) || {};
    } catch (e) {
      return {};
    }
  }
  function paint(element, id) {
    var known = colours();
    if (!(id in known)) {
      known[id] = PALETTE[Object.keys(known).length % PALETTE.length];
      try {
        sessionStorage.setItem("elastic-cart:colours", JSON.stringify(known));
      } catch (e) {
        // Storage full or disabled: the colour holds for this page only.
      }
    }
    element.style.setProperty("--chip-hue", String(known[id]));
  }

  function cell(row, name) {
    return row.querySelector("." + name);
  }

  function newRow(id) {
    var row = document.createElement("tr");
    row.dataset.replica = id;
    var head = document.createElement("th");
    head.scope = "row";
    var chip = document.createElement("span");
    chip.className = "chip replica-id";
    chip.textContent = id;
    head.appendChild(chip);
    row.appendChild(head);
    ["share", "rate", "total", "version", "started", "state"].forEach(function (name) {
      var td = document.createElement("td");
      td.className = name;
      if (name === "share") {
        var meter = document.createElement("meter");
        meter.min = 0;
        meter.max = 1;
        var value = document.createElement("span");
        value.className = "share-value";
        td.appendChild(meter);
        td.appendChild(document.createTextNode(" "));
        td.appendChild(value);
      }
      if (name === "started") td.appendChild(document.createElement("time"));
      row.appendChild(td);
    });
    return row;
  }

  function draw(replica, share, now) {
    var row = body.querySelector('tr[data-replica="' + CSS.escape(replica.id) + '"]');
    if (!row) {
      row = newRow(replica.id);
      body.appendChild(row);
    }
    if (!(replica.id in seen)) seen[replica.id] = now;
    delete gone[replica.id];
    paint(row.querySelector(".replica-id"), replica.id);
    cell(row, "share").querySelector("meter").value = share;
    cell(row, "share").querySelector(".share-value").textContent = Math.round(share * 100) + "%";
    cell(row, "rate").textContent = replica.requests_per_sec.toFixed(1);
    cell(row, "total").textContent = String(replica.requests_total);
    cell(row, "version").textContent = replica.version;
    var time = cell(row, "started").querySelector("time");
    time.dateTime = replica.started_at;
    time.textContent = replica.started_at;
    var state = replica.draining
      ? "draining"
      : now - seen[replica.id] < JOINED_MS && seen[replica.id] > loaded
        ? "joined"
        : "serving";
    cell(row, "state").textContent = state;
    row.className = state;
  }

  function render(fleet) {
    var now = Date.now();
    var total = fleet.replicas.reduce(function (sum, r) {
      return sum + r.requests_per_sec;
    }, 0);
    var live = {};
    fleet.replicas.forEach(function (replica) {
      live[replica.id] = true;
      draw(replica, total > 0 ? replica.requests_per_sec / total : 0, now);
    });
    Array.prototype.slice.call(body.rows).forEach(function (row) {
      var id = row.dataset.replica;
      if (live[id]) return;
      if (!(id in gone)) gone[id] = now;
      if (now - gone[id] >= GONE_MS) {
        body.removeChild(row);
        delete seen[id];
        delete gone[id];
        return;
      }
      row.className = "gone";
      cell(row, "state").textContent = "gone";
      cell(row, "rate").textContent = "0.0";
      cell(row, "share").querySelector("meter").value = 0;
      cell(row, "share").querySelector(".share-value").textContent = "0%";
    });
    count.textContent = String(fleet.replicas.length);
    rate.textContent = total.toFixed(1);
    status.textContent = "Live: this update was served by " + fleet.served_by + ".";
    status.className = "";
  }

  function poll() {
    fetch("/api/fleet", { cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.json().then(function (json) {
          if (!response.ok) throw new Error((json.error && json.error.message) || "HTTP " + response.status);
          return json;
        });
      })
      .then(render)
      .catch(function (err) {
        status.textContent = "The fleet cannot be read right now (" + err.message + "); retrying.";
        status.className = "stale";
      })
      .then(function () {
        setTimeout(poll, POLL_MS);
      });
  }

  Array.prototype.forEach.call(body.querySelectorAll(".replica-id"), function (chip) {
    paint(chip, chip.textContent);
  });
  poll();
})();
