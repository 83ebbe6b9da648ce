// notesctl live updates: listens to /events (server-sent events, fed by writes from every
// instance and the CLI) and updates the open page. Pages work without it; nothing here is
// needed to read or write notes. It also shows times in the reader's time zone.

// Times: the page says `2026-11-28 01:13 UTC` inside `<time datetime="...Z">`; here each becomes
// the reader's own time (`2026-11-28 02:13 CET`), with the UTC text kept as its tooltip.
(function () {
  'use strict';
  function two(n) { return (n < 10 ? '0' : '') + n; }
  function zoneName(d) {
    try {
      var parts = new Intl.DateTimeFormat(undefined, { timeZoneName: 'short' }).formatToParts(d);
      for (var i = 0; i < parts.length; i++) {
        if (parts[i].type === 'timeZoneName') return ' ' + parts[i].value;
      }
    } catch (err) { /* no Intl: the local time without its zone's name */ }
    return '';
  }
  var times = document.querySelectorAll('time[datetime]');
  for (var i = 0; i < times.length; i++) {
    var d = new Date(times[i].getAttribute('datetime'));
    if (isNaN(d.getTime())) continue;
    times[i].title = times[i].textContent;
    times[i].textContent = d.getFullYear() + '-' + two(d.getMonth() + 1) + '-' + two(d.getDate()) +
      ' ' + two(d.getHours()) + ':' + two(d.getMinutes()) + zoneName(d);
  }
})();

(function () {
  'use strict';
  if (!window.EventSource) return;
  var list = document.getElementById('notes');
  var article = document.querySelector('article.note[data-key]');
  var form = document.querySelector('form.note-form[data-key]');
  if (!list && !article && !form) return;

  // Start right after the change the page was rendered from, so nothing made in between is
  // missed; the browser sends Last-Event-ID by itself when it reconnects.
  var holder = list || article || form;
  var after = holder.getAttribute('data-events-after');
  if (!(after && /^\d+$/.test(after))) after = null;
  var handlers = [];
  function on(kind, handle) { handlers.push([kind, handle]); }
  // The browser reconnects by itself after a dropped stream, but not after a refusal (a busy
  // instance answers 503): then this opens a new stream after a while, from the last event seen.
  var source = null;
  function connect() {
    source = new EventSource(after ? '/events?after=' + after : '/events');
    handlers.forEach(function (h) {
      source.addEventListener(h[0], function (e) {
        if (e.lastEventId) after = e.lastEventId;
        try { h[1](JSON.parse(e.data)); } catch (err) { /* a malformed event changes nothing */ }
      });
    });
    var mine = source;
    source.addEventListener('error', function () {
      if (mine !== source || mine.readyState !== EventSource.CLOSED) return;
      setTimeout(connect, 10000 + Math.random() * 10000);
    });
  }
  // A page left for another is closed here: the browser may keep it (back/forward cache), and
  // its open stream would hold one of the six connections a browser allows per server, so a
  // few pages later the next one could not load. Shown again, it resumes from its last event.
  window.addEventListener('pagehide', function () {
    if (source) source.close();
    source = null;
  });
  window.addEventListener('pageshow', function (e) {
    if (e.persisted && !source) connect();
  });
  function notice(text) {
    var n = document.getElementById('live-notice');
    if (!n) return;
    n.textContent = text;
    n.hidden = false;
  }
  function viewUrl(key) { return '/notes/view?key=' + encodeURIComponent(key); }

  if (list) {
    var count = document.getElementById('note-count');
    var firstPage = list.getAttribute('data-page') === '1';
    var perPage = parseInt(list.getAttribute('data-per-page') || '20', 10);
    var itemFor = function (key) {
      var items = list.querySelectorAll('li[data-key]');
      for (var i = 0; i < items.length; i++) {
        if (items[i].getAttribute('data-key') === key) return items[i];
      }
      return null;
    };
    var setTotal = function (delta) {
      if (!count) return;
      var total = Math.max(0, parseInt(count.getAttribute('data-total'), 10) + delta);
      count.setAttribute('data-total', String(total));
      count.textContent = total + (total === 1 ? ' note' : ' notes');
      var empty = document.getElementById('empty');
      if (empty) empty.hidden = total > 0;
    };
    on('created', function (c) {
      setTotal(1);
      // No title: the note was deleted since, and its delete event follows.
      if (!firstPage || itemFor(c.key) || typeof c.title !== 'string') return;
      var li = document.createElement('li');
      li.setAttribute('data-key', c.key);
      var a = document.createElement('a');
      a.href = viewUrl(c.key);
      var title = document.createElement('span');
      title.className = 'title';
      title.textContent = c.title;
      a.appendChild(title);
      var meta = document.createElement('span');
      meta.className = 'meta';
      meta.textContent = 'just now';
      li.appendChild(a);
      li.appendChild(meta);
      list.insertBefore(li, list.firstChild);
      while (list.children.length > perPage) list.removeChild(list.lastChild);
    });
    on('updated', function (c) {
      var li = itemFor(c.key);
      if (!li || typeof c.title !== 'string') return;
      li.querySelector('.title').textContent = c.title;
      li.querySelector('.meta').textContent = 'just now';
    });
    on('deleted', function (c) {
      setTotal(-1);
      var li = itemFor(c.key);
      if (li) li.parentNode.removeChild(li);
    });
    // Changes were missed that the server no longer keeps: the list is redrawn from scratch.
    on('reset', function () { window.location.reload(); });
    // More notes changed at once than the server sends one by one (a bulk import, a busy
    // service with many readers): offered, not done, so thousands of open pages do not all
    // reload at the same moment.
    on('burst', function () {
      notice('Many notes changed at once. ');
      var n = document.getElementById('live-notice');
      if (!n || n.querySelector('a')) return;
      var a = document.createElement('a');
      a.href = window.location.href;
      a.textContent = 'Reload to see them.';
      n.appendChild(a);
    });
  }

  if (article) {
    var key = article.getAttribute('data-key');
    var markDeleted = function () {
      article.classList.add('deleted');
      var actions = article.querySelector('.actions');
      if (actions) actions.hidden = true;
      notice('This note was deleted elsewhere.');
    };
    var refresh = function () {
      fetch('/api/notes/' + encodeURIComponent(key), { headers: { Accept: 'application/json' } })
        .then(function (r) {
          if (r.status === 404) markDeleted();
          return r.ok ? r.json() : null;
        })
        .then(function (note) {
          // Two quick edits: an answer that arrives late must not undo a newer one.
          if (!note || note.version <= parseInt(article.getAttribute('data-version'), 10)) return;
          article.setAttribute('data-version', String(note.version));
          document.getElementById('notetitle').textContent = note.title;
          document.getElementById('notebody').textContent = note.body;
          document.title = note.title;
          var version = document.getElementById('note-version');
          if (version) version.textContent = String(note.version);
          notice('This note was just edited elsewhere; you are seeing version ' + note.version + '.');
        });
    };
    on('updated', function (c) {
      if (c.key !== key || c.version <= parseInt(article.getAttribute('data-version'), 10)) return;
      refresh();
    });
    on('deleted', function (c) {
      if (c.key === key) markDeleted();
    });
    on('reset', refresh);
    // This note may be among many that changed: it is fetched again, after a random pause of
    // up to 5 s, so the pages open on it do not all ask at once.
    var refreshing = false;
    on('burst', function () {
      if (refreshing) return;
      refreshing = true;
      setTimeout(function () { refreshing = false; refresh(); }, Math.random() * 5000);
    });
  }

  if (form) {
    var formKey = form.getAttribute('data-key');
    on('updated', function (c) {
      if (c.key !== formKey || c.version <= parseInt(form.getAttribute('data-version'), 10)) return;
      var title = typeof c.title === 'string' ? ', "' + c.title + '"' : '';
      notice('This note was changed elsewhere since you opened it (now version ' + c.version +
        title + '). If you save, you will see both versions and can choose.');
    });
    on('deleted', function (c) {
      if (c.key !== formKey) return;
      notice('This note was deleted elsewhere; saving will not bring it back.');
    });
    // What the form was opened from may have changed: it says so rather than reload over the
    // user's typing.
    var mayHaveChanged = function (why) {
      return function () {
        notice(why + '; this note may have changed elsewhere since you opened it. If you ' +
          'save, you will see both versions and can choose.');
      };
    };
    on('reset', mayHaveChanged('Live updates were interrupted'));
    on('burst', mayHaveChanged('Many notes changed at once'));
  }

  connect();
})();
