/* window.apiFetch(url, options): fetch() for the app's own /api/ requests
 * from the browser, which carry the httpOnly access cookie.
 *
 * An answer 401 (the access token expired while the page stayed open) asks
 * for a new access token once for the whole page (POST /api/token/refresh/
 * with the refresh cookie and its CSRF token) and repeats the request; if the
 * refresh is refused too, the session is over: the login page, which comes
 * back here afterwards. Before that happens, the page renews the access
 * token a minute before it expires (the readable cookie access_expires says
 * when), so a page left open keeps working without a refused request.
 */
(function () {
  "use strict";
  var refreshing = null;

  function cookie(name) {
    var match = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return match ? decodeURIComponent(match[1]) : "";
  }

  function refresh() {
    if (!refreshing) {
      refreshing = fetch("/api/token/refresh/", {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-TOKEN": cookie("csrf_refresh_token") },
      }).then(function (r) {
        if (r.ok) schedule();
        setTimeout(function () {
          refreshing = null; // later expiries refresh again
        }, 1000);
        return r.ok;
      });
    }
    return refreshing;
  }

  var EARLY_S = 60;
  var renewTimer = null;
  /* Renew a minute before the access token expires, and again after that. */
  function schedule() {
    clearTimeout(renewTimer);
    var exp = Number(cookie("access_expires"));
    if (!exp) return;
    var wait = Math.max(exp - EARLY_S - Date.now() / 1000, 1) * 1000;
    renewTimer = setTimeout(function () {
      refresh().then(function (ok) {
        if (ok) schedule();
      });
    }, Math.min(wait, 2147483647));
  }

  // Signing out revokes the tokens before the /logout answer arrives (the
  // browser holds it while it empties its HTTP cache): requests refused in
  // that time must not send the page to the login form instead, which would
  // cancel the sign-out's navigation and keep its cookies.
  var leaving = false;
  document.addEventListener(
    "click",
    function (event) {
      if (event.target.closest && event.target.closest("a[href='/logout']")) leaving = true;
    },
    true
  );

  function signIn() {
    if (leaving) return;
    var here = window.location.pathname + window.location.search;
    window.location.assign("/login?next=" + encodeURIComponent(here));
  }

  schedule();

  window.apiFetch = function (url, options) {
    options = Object.assign({ credentials: "same-origin" }, options || {});
    return fetch(url, options).then(function (r) {
      if (r.status !== 401) return r;
      return refresh().then(function (ok) {
        if (!ok) {
          signIn();
          return r;
        }
        return fetch(url, options).then(function (again) {
          if (again.status === 401) signIn(); // refreshed, still refused
          return again;
        });
      });
    });
  };
  window.apiFetch.renewSoon = schedule; // after the cookie changed
})();
