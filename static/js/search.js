// Street suggestions while typing, for the search form: an enhancement only (the form
// works without it). Fills the input's <datalist> from /api/v1/streets, naming each
// street's suburbs so same-named streets are told apart. No inline script (CSP).
(function () {
  "use strict";
  var input = document.querySelector("input[data-suggest]");
  if (!input || !window.fetch) return;
  var list = document.getElementById(input.getAttribute("list"));
  var namesBlock = document.getElementById("place-names");
  var placeNames = {};
  try { placeNames = JSON.parse(namesBlock ? namesBlock.textContent : "{}"); } catch (e) { placeNames = {}; }
  var url = input.getAttribute("data-suggest");
  var timer = null;
  var asked = "";
  var controller = null;

  function fill(streets) {
    var byName = {};
    var order = [];
    streets.forEach(function (street) {
      if (!byName[street.name]) { byName[street.name] = []; order.push(street.name); }
      var suburb = placeNames[street.places[0]] || "";
      if (suburb && byName[street.name].indexOf(suburb) < 0) byName[street.name].push(suburb);
    });
    while (list.firstChild) list.removeChild(list.firstChild);
    order.forEach(function (name) {
      var option = document.createElement("option");
      option.value = name;  // textContent and value: never HTML
      if (byName[name].length) option.label = byName[name].join(" · ");
      list.appendChild(option);
    });
  }

  function ask() {
    var q = input.value.trim();
    if (q.length < 2 || q.length > 100 || q === asked) return;
    asked = q;
    if (controller && controller.abort) controller.abort();
    controller = window.AbortController ? new AbortController() : null;
    fetch(url + "?q=" + encodeURIComponent(q), {
      headers: { Accept: "application/json" },
      signal: controller ? controller.signal : undefined
    })
      .then(function (response) { return response.ok ? response.json() : []; })
      .then(function (streets) { if (input.value.trim() === q) fill(streets); })
      .catch(function () { /* suggestions are optional: the form still works */ });
  }

  input.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(ask, 200);
  });
})();
