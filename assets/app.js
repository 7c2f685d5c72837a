/* Page-wide helpers (no Dash callbacks here).
 *
 * Thumbnails: a thumbnail that fails to load (PACS down, say) marks its frame
 * as failed and is asked again a few times with a growing delay.
 *
 * First paint: the study page's HTML carries a plain copy of its cards
 * (#first-paint, pages/study.py) while CSS hides Dash's page; once Dash has
 * drawn a page and its thumbnails have loaded (the same URLs: from the
 * browser's memory cache), the copy goes. After 10 s it goes anyway.
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

(function () {
  var shell = document.getElementById("first-paint");
  if (!shell) return;
  var started = Date.now();
  function swap() {
    var page = document.getElementById("_pages_content");
    var ready = page !== null && page.children.length > 0;
    if (ready) {
      var imgs = page.getElementsByClassName("thumb-img");
      for (var i = 0; i < imgs.length && ready; i++) ready = imgs[i].complete;
    }
    if (ready || Date.now() - started > 10000) shell.remove();
    else setTimeout(swap, 30);
  }
  swap();
})();
