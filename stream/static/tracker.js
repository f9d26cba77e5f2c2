/*
 * clickstream tracker.js: a tiny first-party tracker that sends Segment-format
 * calls to the clickstream collector (POST {host}/v1/batch). No dependencies.
 *
 * Install:
 *   <script>
 *     // Optional stub: lets the page call clickstream.track() etc. before the
 *     // async script has loaded; calls are queued and replayed in order.
 *     window.clickstream = window.clickstream || [];
 *     ["track", "identify", "page", "alias", "consent"].forEach(function (m) {
 *       clickstream[m] = clickstream[m] || function () {
 *         clickstream.push([m].concat([].slice.call(arguments)));
 *       };
 *     });
 *   </script>
 *   <script src="https://collector.example.com/tracker.js"
 *           data-write-key="WRITE_KEY" async></script>
 *
 * Script attributes:
 *   data-write-key     required; sent in the body (and as HTTP Basic for fetch)
 *   data-host          collector origin; defaults to the script's own origin
 *   data-ping-seconds  engaged-time "Page Ping" interval (default 10, 0 = off)
 *   data-respect-dnt   "true" = send nothing when navigator.doNotTrack is "1"
 *   data-auto-page     "false" = no automatic page views (load + SPA routes)
 *   data-consent-required  "true" = no analytics or marketing consent until
 *                      consent() grants it (ask before tracking)
 *
 * API (window.clickstream): track(event, properties), identify(userId, traits),
 * page(name?, properties?), alias(userId), reset(), flush(), anonymousId(),
 * consent({analytics: bool, marketing: bool}).
 * clickstream.push(["track", "Signed Up", {...}]) also works at any time.
 *
 * Consent: once consent() is called (or with data-consent-required), every
 * later call carries context.consent.categoryPreferences {analytics, marketing}
 * (Segment's consent spec), and a change applies from the next call on.
 * Without analytics consent nothing is stored in the browser (no cookie, no
 * localStorage: the id, user id and unsent queue are deleted), calls carry no
 * anonymousId or userId (the collector gives them a daily cookieless id), and
 * identify/alias are not sent. The site's consent tool calls consent() on every
 * page: the tracker does not remember the choice itself. Calls queued by the
 * stub before load take effect before the first page view.
 *
 * Delivery is at-least-once: every call carries a random messageId and the
 * pipeline dedups on it, so we prefer resending to losing events.
 *
 * tracker.min.js is generated from this file by tools/build_tracker.sh.
 */
(function (w, d) {
  'use strict';

  var NAME = 'clickstream';
  var cs = w[NAME];
  // A second copy of the script on the page must not double-count.
  if (cs && cs._loaded) return;
  if (!Array.isArray(cs)) cs = [];

  var nav = w.navigator;
  var loc = w.location;
  var LIB = { name: 'clickstream-tracker.js', version: '1' };
  var MAX_BATCH = 20; // flush as soon as this many calls wait...
  var FLUSH_MS = 1000; // ...or this long after the first one
  var MAX_QUEUE = 500; // bound what we keep in localStorage while offline
  var MAX_BACKOFF = 60000;
  var ACTIVE_MS = 10000; // input within this window counts as "engaged"
  var BEACON_MAX = 60000; // browsers cap beacon/keepalive bodies at 64 KiB
  var SEND_TIMEOUT_MS = 15000;
  var AID = '_cs_aid';
  var UID = '_cs_uid';
  var QKEY = '_cs_q';

  var methods = {};
  var off = false;
  var writeKey, endpoint, pingEvery, autoPage;
  var aid, uid, q, ref, lastUrl, pageCtx;
  var cons = null; // {analytics, marketing} once stated; null: not asked, both allowed
  var timer = 0;
  var busy = 0; // messageIds of the batch being sent by fetch, or 0
  var retryAt = 0;
  var backoff = 0;
  var engagedMs = 0;
  var lastActive = 0;
  var lastTick = now();
  var ticks = 0;

  function now() {
    return Date.now();
  }

  function iso() {
    return new Date().toISOString();
  }

  function warn(e) {
    try {
      w.console && console.warn('[clickstream]', e);
    } catch (_) {}
  }

  // Public methods must never throw into the host page.
  function safe(fn) {
    return function () {
      if (off) return;
      try {
        return fn.apply(null, arguments);
      } catch (e) {
        warn(e);
      }
    };
  }

  function obj(x) {
    return x && typeof x === 'object' ? x : {};
  }

  function uuid() {
    var c = w.crypto;
    // randomUUID only exists in secure contexts; getRandomValues works everywhere.
    if (c && c.randomUUID) return c.randomUUID();
    return '10000000-1000-4000-8000-100000000000'.replace(/[018]/g, function (ch) {
      var r = c && c.getRandomValues ? c.getRandomValues(new Uint8Array(1))[0] : (Math.random() * 256) | 0;
      return (ch ^ (r & (15 >> (ch / 4)))).toString(16);
    });
  }

  // ---- storage: localStorage and cookies both throw when blocked ----

  function lsGet(k) {
    try {
      return w.localStorage.getItem(k);
    } catch (e) {
      return null;
    }
  }

  function lsSet(k, v) {
    try {
      if (v == null) localStorage.removeItem(k);
      else localStorage.setItem(k, v);
    } catch (e) {}
  }

  function cookieGet(k) {
    try {
      var m = d.cookie.match(new RegExp('(?:^|; )' + k + '=([^;]*)'));
      return m ? decodeURIComponent(m[1]) : null;
    } catch (e) {
      return null;
    }
  }

  function cookieSet(k, v) {
    try {
      d.cookie =
        k + '=' + (v == null ? '' : encodeURIComponent(v)) +
        '; Max-Age=' + (v == null ? 0 : 31536000) +
        '; Path=/; SameSite=Lax' + (loc.protocol === 'https:' ? '; Secure' : '');
    } catch (e) {}
  }

  function persist(k, v) {
    if (v != null && !can()) return; // without analytics consent nothing is stored
    cookieSet(k, v);
    lsSet(k, v);
  }

  function can() {
    return !cons || cons.analytics;
  }

  // Either store restores the other (cookie caps and "clear storage" tools
  // each wipe only one); rewriting also slides the cookie's 1-year expiry.
  function restore(k) {
    var v = cookieGet(k) || lsGet(k);
    if (v) persist(k, v);
    return v;
  }

  // ---- building calls ----

  function pageInfo() {
    return {
      url: loc.href,
      path: loc.pathname,
      referrer: ref,
      title: d.title,
      search: loc.search
    };
  }

  function campaign() {
    var c = {};
    try {
      new URLSearchParams(loc.search).forEach(function (v, k) {
        // Segment names utm_campaign "name"; the rest keep their suffix.
        if (k.indexOf('utm_') === 0) c[k === 'utm_campaign' ? 'name' : k.slice(4)] = v;
      });
    } catch (e) {}
    return c;
  }

  function send(type, fields, page) {
    var ctx = {
      page: page || pageInfo(),
      userAgent: nav.userAgent,
      locale: nav.language,
      screen: { width: screen.width, height: screen.height },
      library: LIB,
      campaign: campaign()
    };
    try {
      ctx.timezone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    } catch (e) {}
    if (cons) ctx.consent = { categoryPreferences: cons };
    var m = {
      type: type,
      properties: {},
      messageId: uuid(),
      timestamp: iso(),
      context: ctx
    };
    if (aid) m.anonymousId = aid;
    if (uid) m.userId = uid;
    for (var k in fields) if (fields[k] != null) m[k] = fields[k];
    // Snapshot now: the caller may mutate its objects later, and a circular
    // object should fail here (inside safe()) rather than in the flush loop.
    enqueue(JSON.parse(JSON.stringify(m)));
  }

  methods.track = function (event, props) {
    if (event) send('track', { event: String(event), properties: obj(props) });
  };

  methods.page = function (name, props) {
    if (name && typeof name === 'object') {
      props = name;
      name = null;
    }
    pageCtx = pageInfo();
    // Segment convention: page properties repeat the page context.
    var p = {};
    for (var k in pageCtx) p[k] = pageCtx[k];
    props = obj(props);
    for (k in props) p[k] = props[k];
    send('page', { name: name == null ? null : String(name), properties: p }, pageCtx);
  };

  methods.identify = function (id, traits) {
    if (!can()) return; // linking a person needs analytics consent
    if (id && typeof id === 'object') {
      traits = id;
      id = null;
    }
    if (id != null && id !== '') persist(UID, (uid = String(id)));
    send('identify', { traits: obj(traits) });
  };

  methods.alias = function (id, previousId) {
    if (id == null || id === '' || !can()) return;
    var prev = previousId || uid || aid;
    persist(UID, (uid = String(id)));
    send('alias', { previousId: String(prev) });
  };

  // Logout: forget the user and start a fresh anonymous identity.
  methods.reset = function () {
    uid = null;
    persist(UID, null);
    if (can()) persist(AID, (aid = uuid()));
  };

  // From the next call on. Granting analytics creates (or restores) the stored id;
  // refusing it deletes every stored key.
  methods.consent = function (c) {
    c = obj(c);
    cons = { analytics: c.analytics === true, marketing: c.marketing === true };
    identity();
  };

  function identity() {
    if (can()) {
      aid = restore(AID);
      if (!aid) persist(AID, (aid = uuid()));
      uid = restore(UID);
    } else {
      aid = uid = null;
      persist(AID, null);
      persist(UID, null);
    }
    save();
  }

  methods.flush = function () {
    retryAt = 0;
    flush();
  };

  methods.anonymousId = function () {
    return aid;
  };

  // ---- queue and delivery ----

  function save() {
    // Without analytics consent the unsent queue lives in memory only.
    if (q) lsSet(QKEY, q.length && can() ? JSON.stringify(q) : null);
  }

  function enqueue(m) {
    q.push(m);
    // Drop the oldest rather than grow storage without bound while offline.
    if (q.length > MAX_QUEUE) q.splice(0, q.length - MAX_QUEUE);
    save();
    if (q.length >= MAX_BATCH) flush();
    else if (!timer) later(FLUSH_MS);
  }

  function later(ms) {
    clearTimeout(timer);
    timer = setTimeout(function () {
      timer = 0;
      retryAt = 0;
      flush();
    }, ms);
  }

  function body(batch) {
    return JSON.stringify({ batch: batch, writeKey: writeKey, sentAt: iso() });
  }

  function ids(batch) {
    var s = {};
    for (var i = 0; i < batch.length; i++) s[batch[i].messageId] = 1;
    return s;
  }

  // Remove delivered (or undeliverable) calls from the queue.
  function ack(set) {
    q = q.filter(function (m) {
      return !set[m.messageId];
    });
    save();
  }

  function post(data) {
    var headers = { 'Content-Type': 'application/json' };
    try {
      headers.Authorization = 'Basic ' + btoa(writeKey + ':');
    } catch (e) {}
    // A request that never answers would block the queue forever: abort it
    // and let the backoff retry.
    var ctl = w.AbortController && new AbortController();
    if (ctl) setTimeout(function () {
      ctl.abort();
    }, SEND_TIMEOUT_MS);
    // keepalive lets an in-flight batch finish if the visitor navigates away.
    return fetch(endpoint, {
      method: 'POST',
      body: data,
      headers: headers,
      keepalive: data.length < BEACON_MAX,
      signal: ctl ? ctl.signal : undefined
    });
  }

  function flush() {
    if (busy || !q.length || now() < retryAt || !w.fetch) return;
    clearTimeout(timer);
    timer = 0;
    var batch = q.slice(0, MAX_BATCH);
    var sending = (busy = ids(batch));
    post(body(batch)).then(
      function (res) {
        busy = 0;
        var st = res.status;
        // 4xx other than 429 (bad key, bad payload) will never succeed: drop.
        if (res.ok || (st >= 400 && st < 500 && st !== 429)) {
          backoff = 0;
          ack(sending);
          if (q.length) flush();
        } else fail();
      },
      function () {
        busy = 0;
        fail();
      }
    );
  }

  // Exponential backoff: 1 s, 2 s, 4 s ... capped at 60 s. The queue is
  // already in localStorage, so a reload picks it up too.
  function fail() {
    backoff = Math.min(MAX_BACKOFF, backoff ? backoff * 2 : 1000);
    retryAt = now() + backoff;
    later(backoff);
  }

  // Page is being hidden or unloaded: timers may never fire again, so hand
  // everything to sendBeacon (or a keepalive fetch) right now.
  function hide() {
    ping(true);
    // Offline or mid-backoff: a beacon would most likely be lost, and we
    // cannot tell. Keep the calls in localStorage (and the retry timer, in
    // case the page is only backgrounded) for the next attempt instead.
    if (nav.onLine === false || now() < retryAt) return;
    clearTimeout(timer);
    timer = 0;
    var rest = q.filter(function (m) {
      return !(busy && busy[m.messageId]);
    });
    while (rest.length) {
      var batch = rest.splice(0, MAX_BATCH);
      var data = body(batch);
      var ok = false;
      try {
        // text/plain keeps the beacon CORS-simple (no preflight); beacons
        // cannot carry headers, so the write key travels in the body.
        ok = data.length < BEACON_MAX && nav.sendBeacon &&
          nav.sendBeacon(endpoint, new Blob([data], { type: 'text/plain' }));
      } catch (e) {}
      if (ok) ack(ids(batch));
      else if (w.fetch) lastGasp(data, ids(batch));
    }
  }

  // Left in the queue until acknowledged: if the page dies first, the next
  // page resends it and the pipeline dedups by messageId.
  function lastGasp(data, set) {
    post(data).then(function (res) {
      if (res.ok) ack(set);
    }, function () {});
  }

  // ---- engaged time (Snowplow-style page pings) ----

  function active() {
    lastActive = now();
  }

  function tick() {
    var t = now();
    // Cap the step so a suspended laptop or throttled timer adds nothing odd.
    var dt = Math.min(t - lastTick, 2000);
    lastTick = t;
    if (d.visibilityState !== 'hidden' && t - lastActive < ACTIVE_MS) engagedMs += dt;
  }

  // Regular pings report whole seconds and carry the remainder; the final
  // ping on hide/navigation rounds and resets.
  function ping(final) {
    if (!pingEvery) return;
    tick();
    var s = final ? Math.round(engagedMs / 1000) : Math.floor(engagedMs / 1000);
    engagedMs = final ? 0 : engagedMs - s * 1000;
    ticks = 0;
    // Context is the page the time was spent on (matters after SPA routing).
    if (s > 0) send('track', { event: 'Page Ping', properties: { engaged_seconds: s } }, pageCtx || pageInfo());
  }

  // ---- automatic page views ----

  function bare(u) {
    return u.split('#')[0]; // in-page anchors are not new page views
  }

  function route() {
    var u = bare(loc.href);
    if (u === lastUrl) return; // dedupe replaceState / pushState to the same URL
    if (lastUrl) {
      ping(true); // engaged time belongs to the route being left
      ref = pageCtx ? pageCtx.url : ref; // SPA: the previous route is the referrer
    }
    lastUrl = u;
    methods.page();
  }

  function hookHistory() {
    ['pushState', 'replaceState'].forEach(function (fn) {
      var orig = history[fn];
      if (typeof orig !== 'function') return;
      history[fn] = function () {
        var r = orig.apply(this, arguments);
        safeRoute();
        return r;
      };
    });
    w.addEventListener('popstate', safeRoute);
    // Back/forward cache restores do not reload the script: count a view.
    w.addEventListener('pageshow', function (e) {
      if (e.persisted) {
        lastUrl = '';
        safeRoute();
      }
    });
  }

  var safeRoute = safe(route);

  // ---- start ----

  function run(call) {
    call = [].slice.call(call);
    var f = methods[call[0]];
    if (f) return safe(f).apply(null, call.slice(1));
  }

  function init() {
    var pending = cs.splice(0, cs.length);
    for (var k in methods) cs[k] = safe(methods[k]);
    // After load, push() executes immediately instead of queueing.
    cs.push = function () {
      for (var i = 0; i < arguments.length; i++) run(arguments[i]);
      return 0;
    };
    cs._loaded = true;
    w[NAME] = cs;

    var el = d.currentScript || d.querySelector('script[data-write-key]');
    var attr = function (n) {
      return el ? el.getAttribute('data-' + n) : null;
    };
    var ps = attr('ping-seconds');
    writeKey = attr('write-key') || '';
    endpoint =
      (attr('host') || (el && el.src ? new URL(el.src, loc.href).origin : loc.origin)).replace(/\/+$/, '') +
      '/v1/batch';
    pingEvery = ps == null || ps === '' ? 10 : Math.max(0, Math.round(+ps) || 0);
    autoPage = attr('auto-page') !== 'false';
    if (attr('consent-required') === 'true') cons = { analytics: false, marketing: false };
    // Opt-in only: sites decide whether to honour the (deprecated) DNT signal.
    if (attr('respect-dnt') === 'true' && nav.doNotTrack === '1') {
      off = true;
      return;
    }

    ref = d.referrer;
    try {
      q = JSON.parse(lsGet(QKEY)) || [];
    } catch (e) {}
    if (!Array.isArray(q)) q = [];
    // Consent first: it decides what the first page view may carry and store.
    pending = pending.filter(function (call) {
      if (call[0] !== 'consent') return true;
      run(call);
    });
    identity();

    ['mousemove', 'mousedown', 'keydown', 'scroll', 'wheel', 'touchstart'].forEach(function (ev) {
      w.addEventListener(ev, active, { capture: true, passive: true });
    });
    if (pingEvery) {
      setInterval(
        safe(function () {
          tick();
          if (++ticks >= pingEvery) ping();
        }),
        1000
      );
    }
    d.addEventListener(
      'visibilitychange',
      safe(function () {
        if (d.visibilityState === 'hidden') hide();
      })
    );
    w.addEventListener('pagehide', safe(hide));
    w.addEventListener('online', cs.flush);

    if (autoPage) {
      hookHistory();
      route();
    }
    // Replay calls made before the script loaded, after the initial page view.
    for (var i = 0; i < pending.length; i++) run(pending[i]);
    if (q.length && !timer) later(FLUSH_MS); // leftovers from an earlier page
  }

  try {
    init();
  } catch (e) {
    warn(e);
  }
})(window, document);
