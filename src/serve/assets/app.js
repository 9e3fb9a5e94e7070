// murphy serve: a run in progress follows its stream of server-sent events, no reload.
(function () {
  "use strict";
  var body = document.body;
  var run = body.dataset.run;
  body.dataset.updates = "0";
  if (!run || body.dataset.live !== "1" || !window.EventSource) return;
  function state(word) {
    var span = document.createElement("span");
    span.className = "state s-" + word;
    span.textContent = word;
    return span;
  }
  function put(cell, node) {
    cell.textContent = "";
    cell.appendChild(node);
  }
  var table = document.querySelector("table.stages");
  var source = new EventSource("/runs/" + encodeURIComponent(run) + "/stream");
  source.addEventListener("run", function (e) {
    var data = JSON.parse(e.data);
    put(document.getElementById("run-status"), state(data.status));
    document.getElementById("run-duration").textContent = data.duration;
    data.stages.forEach(function (s) {
      var row = null;
      table.querySelectorAll("tr[data-stage]").forEach(function (r) {
        if (r.dataset.stage === s.name) row = r;
      });
      if (!row) {
        row = table.insertRow(-1);
        row.dataset.stage = s.name;
        ["stage-name", "stage-state", "stage-duration", "", ""].forEach(function (c) {
          row.insertCell(-1).className = c;
        });
        row.cells[0].textContent = s.name;
      }
      put(row.querySelector(".stage-state"), state(s.state));
      row.querySelector(".stage-duration").textContent = s.duration;
    });
    body.dataset.updates = String(Number(body.dataset.updates) + 1);
    if (data.status !== "running") {
      source.close();
      body.dataset.live = "0";
    }
  });
})();
