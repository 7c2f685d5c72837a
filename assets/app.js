/* Page-wide helpers (no Dash callbacks here).
 *
 * Thumbnails: a thumbnail that fails to load (PACS down, say) marks its frame
 * as failed and is asked again a few times with a growing delay.
 */
(function () {
  document.addEventListener(
    "error",
    function (event) {
      // event: the error of any element; only thumbnails are handled
      var img = event.target;
      if (!img || !img.classList || !img.classList.contains("thumb-img")) return;
      var tries = Number(img.dataset.tries || 0);
      img.parentElement.classList.add("failed");
      if (tries >= 5) return;
      img.dataset.tries = String(tries + 1);
      setTimeout(function () {
        var url = new URL(img.src, window.location.href);
        url.searchParams.set("try", String(tries + 1));
        img.src = url.toString();
      }, 1000 * Math.pow(2, tries));
    },
    true // capture: error events do not bubble
  );
  document.addEventListener(
    "load",
    function (event) {
      var img = event.target;
      if (img && img.classList && img.classList.contains("thumb-img")) {
        img.parentElement.classList.remove("failed");
      }
    },
    true
  );
})();
