/* The analysis page's browser side (pages/analysis.py) and the viewer's
 * "Analysis" link (#open-analysis, pages/viewer.py).
 *
 * The link opens /analysis/<study>/<series> with the image and window the
 * viewer shows at the moment it is followed (read from the viewer's state, not
 * from the URL, which the viewer updates a moment later). Updated on every way
 * a link gets followed: click, middle click, context menu, keyboard focus.
 */
(function () {
  "use strict";

  /* event: any pointer or focus event; acts only on the Analysis link */
  function refresh(event) {
    var link = event.target && event.target.closest && event.target.closest("#open-analysis");
    var where = window.location.pathname.match(/^\/viewer\/([^/]+)\/([^/]+)/);
    if (!link || !where) return;
    var viewer = window.dash_clientside && window.dash_clientside.viewer;
    var s = viewer && viewer.state ? viewer.state() : null;
    var q = new URLSearchParams();
    if (s) {
      q.set("image", String(s.n));
      if (s.window) {
        q.set("wc", String(Math.round(s.window[0])));
        q.set("ww", String(Math.round(s.window[1])));
      }
    }
    var query = q.toString();
    link.href = "/analysis/" + where[1] + "/" + where[2] + (query ? "?" + query : "");
  }

  var CORNERS = ["x0", "y0", "x1", "y1"];

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    analysis: {
      /* relayout: the image figure's relayoutData. Returns the corners
       * [x0, y0, x1, y1] of the rectangle just drawn (the last in "shapes")
       * or moved ("shapes[k].x0" ...), else no_update (zoom, autosize). */
      drawn: function (relayout) {
        var none = window.dash_clientside.no_update;
        if (!relayout) return none;
        if (relayout.shapes) {
          var rects = relayout.shapes.filter(function (s) {
            return s.type === "rect";
          });
          var last = rects[rects.length - 1];
          return last ? CORNERS.map(function (k) { return Number(last[k]); }) : none;
        }
        var edited = {};
        Object.keys(relayout).forEach(function (key) {
          var m = key.match(/^shapes\[\d+\]\.(x0|y0|x1|y1)$/);
          if (m) edited[m[1]] = Number(relayout[key]);
        });
        return CORNERS.every(function (k) { return k in edited; })
          ? CORNERS.map(function (k) { return edited[k]; })
          : none;
      },
    },
  });

  ["mousedown", "click", "auxclick", "contextmenu", "focusin"].forEach(function (type) {
    document.addEventListener(type, refresh, true);
  });
})();
