// Sorts a table[data-sortable] in place when a column's sort link is chosen, instead of
// loading the page again. Without this script the links sort on the server (?sort=&order=),
// with the same order: rows without a figure always come last.
(function () {
  "use strict";

  function sortRows(table, key, order) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var byName = function (a, b) {
      return a.dataset.name.localeCompare(b.dataset.name, "en", { sensitivity: "base" });
    };
    rows.sort(byName);
    var ranked = rows;
    var rest = [];
    if (key !== "name") {
      ranked = rows.filter(function (r) { return r.dataset[key] !== undefined; });
      rest = rows.filter(function (r) { return r.dataset[key] === undefined; });
      ranked.sort(function (a, b) {
        var d = parseFloat(a.dataset[key]) - parseFloat(b.dataset[key]);
        return order === "desc" ? -d : d;
      });
    } else if (order === "desc") {
      ranked.reverse();
    }
    ranked.concat(rest).forEach(function (row) { body.appendChild(row); });
  }

  function update(table, key, order) {
    table.querySelectorAll("thead th").forEach(function (th) {
      var link = th.querySelector("a[data-sort]");
      th.removeAttribute("aria-sort");
      if (!link) { return; }
      var arrow = link.querySelector("span[aria-hidden]");
      if (arrow) { arrow.remove(); }
      var url = new URL(link.href);
      var sorted = link.dataset.sort === key;
      url.searchParams.set("order", sorted && order === "asc" ? "desc" : "asc");
      link.href = url.toString();
      if (sorted) {
        th.setAttribute("aria-sort", order === "asc" ? "ascending" : "descending");
        var mark = document.createElement("span");
        mark.setAttribute("aria-hidden", "true");
        mark.textContent = order === "asc" ? " ▲" : " ▼";
        link.appendChild(mark);
      }
    });
  }

  document.querySelectorAll("table[data-sortable]").forEach(function (table) {
    table.addEventListener("click", function (event) {
      var link = event.target.closest("a[data-sort]");
      if (!link || event.ctrlKey || event.metaKey || event.shiftKey) { return; }
      event.preventDefault();
      var url = new URL(link.href);
      var key = link.dataset.sort;
      var order = url.searchParams.get("order") === "desc" ? "desc" : "asc";
      sortRows(table, key, order);
      update(table, key, order);
      history.replaceState(null, "", url.toString());
    });
  });
})();
