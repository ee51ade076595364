// Live updates for the status page. The page is whole without this file:
// it only replaces sections with what the server sends, and says so when
// the connection drops. No library, no build step.
(function () {
  'use strict';
  var body = document.body;
  var banner = document.getElementById('conn');
  var live = body.getAttribute('data-live');
  if (!live || !window.EventSource || !window.JSON) {
    return;
  }
  var es = null;
  var retry = null;
  var delay = 1000; // doubles up to 30 s while the unit does not answer
  var pending = {};

  function say(text) {
    banner.textContent = text;
    banner.hidden = false;
    body.classList.add('stale');
  }
  function quiet() {
    banner.hidden = true;
    body.classList.remove('stale');
  }

  // A section the operator is typing or choosing in is left alone until
  // they leave it, so a live update never eats a form.
  function busy(el) {
    var a = document.activeElement;
    return a && a !== body && el.contains(a) && /^(INPUT|SELECT|TEXTAREA)$/.test(a.tagName);
  }
  function apply(sections) {
    Object.keys(sections).forEach(function (id) {
      var el = document.querySelector('[data-section="' + id + '"]');
      if (!el) {
        return;
      }
      if (busy(el)) {
        pending[id] = sections[id];
        return;
      }
      delete pending[id];
      el.innerHTML = sections[id];
    });
  }
  document.addEventListener('focusout', function () {
    setTimeout(function () {
      var p = pending;
      pending = {};
      apply(p);
    }, 0);
  });

  function connect() {
    retry = null;
    es = new EventSource(live);
    es.onopen = function () {
      delay = 1000;
      quiet();
    };
    es.addEventListener('sections', function (e) {
      apply(JSON.parse(e.data));
    });
    // The server ends a live connection after a while; open the next at once.
    es.addEventListener('bye', function () {
      es.close();
      connect();
    });
    es.onerror = function () {
      es.close();
      var wait = Math.round(delay * (0.75 + Math.random() / 2));
      say('Reconnecting… live updates stopped (the unit does not answer, or too many pages are open); ' +
        'trying again in ' + Math.max(1, Math.round(wait / 1000)) + ' s. What you see may be out of date.');
      retry = setTimeout(connect, wait);
      delay = Math.min(delay * 2, 30000);
    };
  }
  function reconnect() {
    if (es) {
      es.close();
    }
    if (retry) {
      clearTimeout(retry);
    }
    delay = 1000;
    connect();
  }

  // The filter box narrows the streams table as the operator types: the
  // live stream is asked for the new view, and the address keeps it.
  var q = document.getElementById('q');
  if (q && window.history && window.URLSearchParams) {
    var typing = null;
    q.addEventListener('input', function () {
      clearTimeout(typing);
      typing = setTimeout(function () {
        var params = new URLSearchParams();
        if (q.value.trim() !== '') {
          params.set('q', q.value.trim());
        }
        var query = params.toString();
        var self = '/' + (query ? '?' + query : '');
        history.replaceState(null, '', self);
        live = '/live' + (query ? '?' + query : '');
        document.querySelectorAll('input[name="next"]').forEach(function (n) {
          n.value = self;
        });
        reconnect();
      }, 300);
    });
  }

  connect();
})();
