(function () {
  var drawn = [];
  document.querySelectorAll('svg.chart').forEach(function (svg) {
    var items = svg.querySelectorAll('.pt, .bar'), ok = 0;
    items.forEach(function (el) { var b = el.getBBox(); if (b.width > 0 && b.height > 0) ok++; });
    drawn.push(svg.id + ':' + ok + '/' + items.length);
  });
  document.body.setAttribute('data-drawn', drawn.join(' '));
  document.querySelectorAll('table.calls').forEach(function (table) {
    table.querySelectorAll('th').forEach(function (th, col) {
      th.addEventListener('click', function () {
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        var dir = th.getAttribute('data-dir') === 'asc' ? -1 : 1;
        rows.sort(function (a, b) {
          var x = a.cells[col], y = b.cells[col];
          var u = x.getAttribute('data-v'), v = y.getAttribute('data-v');
          if (u !== null && v !== null) return dir * (parseFloat(u) - parseFloat(v));
          return dir * x.textContent.localeCompare(y.textContent);
        });
        rows.forEach(function (r) { body.appendChild(r); });
        th.setAttribute('data-dir', dir === 1 ? 'asc' : 'desc');
      });
    });
  });
})();
