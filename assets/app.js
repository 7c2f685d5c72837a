/* Page-wide helpers (no Dash callbacks here; thumbnails are loaded by
 * assets/imagequeue.js).
 *
 * First paint: the study page's HTML carries a plain copy of its cards
 * (#first-paint, pages/study.py) while CSS hides Dash's page; once Dash has
 * drawn a page and its thumbnails are shown (the same blob URLs as the copy's)
 * or given up for now, the copy goes. After 10 s it goes anyway.
 */
(function () {
  var shell = document.getElementById("first-paint");
  if (!shell) return;
  var started = Date.now();
  function swap() {
    var page = document.getElementById("_pages_content");
    var ready = page !== null && page.children.length > 0;
    if (ready) {
      var imgs = page.getElementsByClassName("thumb-img");
      for (var i = 0; i < imgs.length && ready; i++) {
        var img = imgs[i];
        ready = (img.getAttribute("src") && img.complete) || img.parentElement.classList.contains("failed");
      }
    }
    if (ready || Date.now() - started > 10000) shell.remove();
    else setTimeout(swap, 30);
  }
  swap();
})();
