/*! Client Portal analytics — a cookieless pageview script (~1 KB minified).
 *
 * Embed on every page of a registered site:
 *   <script defer src="https://YOUR-CDN/analytics.js"
 *           data-site-key="site_..." data-api="https://YOUR-API/analytics/collect"></script>
 *
 * Sends a pageview on load and on single-page-app navigations (history.pushState, popstate),
 * and exposes window.portalAnalytics(name, props) for custom events, e.g.
 *   portalAnalytics('Signup', {plan: 'pro'})
 * Bodies go as text/plain (a "simple" request: no CORS preflight) with navigator.sendBeacon when
 * available, so leaving the page does not lose the event. Nothing is stored in the browser; the
 * server derives a daily-rotating visitor id and keeps no IP. Localhost pages are skipped unless
 * data-allow-localhost is set; `localStorage.portal_analytics_ignore = "true"` opts a browser out.
 */
(function () {
  'use strict';
  var script = document.currentScript;
  if (!script) return;
  var key = script.getAttribute('data-site-key');
  var api = script.getAttribute('data-api') || new URL('/analytics/collect', script.src).href;
  if (!key) return;
  var local = /^(localhost|127\.|\[::1\])/.test(location.hostname);
  if (local && !script.hasAttribute('data-allow-localhost')) return;

  function ignored() {
    try { return localStorage.getItem('portal_analytics_ignore') === 'true'; } catch (e) { return false; }
  }

  function send(name, props) {
    if (ignored()) return;
    var event = {
      site_key: key,
      name: name,
      url: location.href,
      referrer: document.referrer || null,
      screen_width: window.innerWidth
    };
    if (props) event.props = props;
    var body = JSON.stringify(event);
    if (navigator.sendBeacon && navigator.sendBeacon(api, new Blob([body], { type: 'text/plain' }))) return;
    fetch(api, { method: 'POST', body: body, headers: { 'Content-Type': 'text/plain' }, keepalive: true })
      .catch(function () {});
  }

  var last = null;
  function pageview() {
    if (last === location.pathname + location.search) return;
    last = location.pathname + location.search;
    send('pageview');
  }

  var push = history.pushState;
  if (push) {
    history.pushState = function () { push.apply(this, arguments); pageview(); };
    window.addEventListener('popstate', pageview);
  }
  window.portalAnalytics = function (name, props) { send(String(name), props); };
  if (document.visibilityState === 'prerender') {
    document.addEventListener('visibilitychange', function once() {
      if (document.visibilityState !== 'prerender') { document.removeEventListener('visibilitychange', once); pageview(); }
    });
  } else {
    pageview();
  }
})();
