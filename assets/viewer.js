/* The first viewer's browser side: one namespace on window.dash_clientside,
 * plus wheel and keyboard listeners attached once for the whole app. */
/* The image shown and the series length: the source of truth for key and
 * wheel steps, so fast input never reads a counter the page has not redrawn. */
var viewerState = { current: 0, total: 0 };

window.dash_clientside = Object.assign({}, window.dash_clientside, {
  viewer: {
    /* value: the 1-based image number; urls: every image's URL in order;
     * focus: the image the server's loader was last centred on.
     * Returns the image source, the counter text and, when the user has
     * moved 5 images or more, the new centre for the loader; asks the
     * browser for the 3 images on each side so the next steps need no wait. */
    show: function (value, urls, focus) {
      var skip = window.dash_clientside.no_update;
      if (!urls || !urls.length) return [skip, "", skip];
      var n = Math.min(Math.max(value || 1, 1), urls.length);
      for (var d = -3; d <= 3; d++) {
        var k = n - 1 + d;
        if (d !== 0 && k >= 0 && k < urls.length) new Image().src = urls[k];
      }
      viewerState.current = n;
      viewerState.total = urls.length;
      var refocus = Math.abs(n - (focus || 1)) >= 5 ? n : skip;
      return [urls[n - 1], n + " / " + urls.length, refocus];
    },
  },
});

(function () {
  /* Move the slider by `delta` images (or to `to`), as the user would. */
  function step(delta, to) {
    if (!document.getElementById("viewer-slider") || !viewerState.total) return false;
    var current = viewerState.current;
    var next = to !== undefined ? to : current + delta;
    next = Math.min(Math.max(next, 1), viewerState.total);
    if (next !== current) {
      viewerState.current = next;
      window.dash_clientside.set_props("viewer-slider", { value: next });
    }
    return true;
  }

  document.addEventListener("keydown", function (event) {
    // event: keys act on the viewer unless the user types into a field
    var tag = (event.target && event.target.tagName) || "";
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") return;
    var keys = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 };
    var handled = false;
    if (event.key in keys) handled = step(keys[event.key]);
    else if (event.key === "Home") handled = step(0, 1);
    else if (event.key === "End") handled = step(0, Infinity);
    if (handled) event.preventDefault();
  });

  var pending = 0, frame = null;
  document.addEventListener(
    "wheel",
    function (event) {
      // event: a wheel over the viewport steps through the series, one
      // image per notch, coalesced to one step per animation frame
      if (!event.target.closest || !event.target.closest("#viewer-viewport")) return;
      event.preventDefault();
      pending += event.deltaY > 0 ? 1 : -1;
      if (frame === null) {
        frame = requestAnimationFrame(function () {
          step(pending);
          pending = 0;
          frame = null;
        });
      }
    },
    { passive: false }
  );
})();
