// The widgets page: the myxi 1.x client API, used as the 1.x README shows
// (meta tag, Myxi.Connection, authentication hook, subscribe, sendAction),
// plus request() for SayHello. Plain script, no build step.
(function () {
  'use strict';

  var TOKEN_KEY = 'myxi-demo-token';
  var LOG_LIMIT = 40;

  var $ = function (selector, root) { return (root || document).querySelector(selector); };
  var byTestId = function (id, root) { return $('[data-testid="' + id + '"]', root); };

  var ui = {
    state: byTestId('connection-state'),
    stateLabel: $('.state-label'),
    account: byTestId('account'),
    accountName: byTestId('account-name'),
    accountAvatar: byTestId('account-avatar'),
    signin: byTestId('signin'),
    signinError: byTestId('signin-error'),
    tokenForm: byTestId('token-form'),
    tokenInput: byTestId('token-input'),
    widgets: byTestId('widgets'),
    widgetsError: byTestId('widgets-error'),
    grid: byTestId('widget-grid'),
    sessionId: byTestId('session-id'),
    hello: byTestId('say-hello'),
    helloReply: byTestId('hello-reply'),
    log: byTestId('event-log'),
    template: document.getElementById('widget-template'),
  };

  // --- Connection -------------------------------------------------------

  // As in the 1.x README: the host comes from <meta name="myxi-host">, and
  // the connection starts at once (before anyone signs in).
  var host = $('meta[name="myxi-host"]').getAttribute('content');
  if (!window.Myxi || !Myxi.Connection) {
    ui.stateLabel.textContent = 'Client not loaded';
    showSigninError('The Myxi client (/myxi.js) did not load: run `go generate ./...` and restart the demo.');
    return;
  }
  var connection = new Myxi.Connection(host);
  window.myxi = connection; // for the curious, in the browser console

  var token = sessionStorage.getItem(TOKEN_KEY);
  var username = null;
  var closedOnce = false; // after a first close, "connecting" means reconnecting
  var willReconnect = false; // the last close scheduled a retry
  var widgets = {}; // id -> { card, subscription, quantity, version }

  connection.on('SocketConnected', function () {
    logLocal('Connected', host);
    renderState();
  });
  connection.on('SocketAuthenticated', function () {
    renderState();
    // The client sends the waiting subscriptions now.
    eachWidget(function (w) {
      if (w.status === 'pending' || w.status === 'offline') setStatus(w, 'subscribing');
    });
  });
  connection.on('SocketDisconnected', function (info) {
    var retry = info.reconnectIn == null ? '' : ' Reconnecting in ' + Math.round(info.reconnectIn / 1000) + ' s.';
    logLocal('Disconnected', 'code ' + info.code + '.' + retry);
    eachWidget(function (w) {
      if (w.status === 'live' || w.status === 'subscribing') setStatus(w, 'offline');
    });
  });
  connection.on('SocketClosed', function (info) {
    closedOnce = true;
    willReconnect = info.reconnectIn != null;
    renderState();
  });
  // Back from offline (a laptop waking up, a network change): reconnect
  // now rather than at the end of the client's retry delay. Not after a
  // close that says not to come back (4001), when no retry is scheduled.
  window.addEventListener('online', function () {
    if (willReconnect && connection.state === 'closed') connection.connect();
  });
  connection.on('SocketMessageReceived', function (event) {
    logEvent(event);
    renderState();
  });
  connection.on('Welcome', function (payload) {
    ui.sessionId.textContent = payload.id;
  });

  // The authentication hook of the 1.x README: run after every (re)connect;
  // subscriptions wait until isAuthenticated().
  function authenticate() {
    if (token) connection.sendAction('Authenticate', { session_token: token }, 'authenticate');
  }
  connection.on('Authenticated', function (payload) {
    username = payload.username;
    connection.isAuthenticated();
  });
  connection.on('Error', function (payload, tag) {
    if (tag === 'authenticate' && payload.error === 'InvalidSessionToken') {
      signOut('That session token is not valid (InvalidSessionToken).');
    }
  });

  function renderState() {
    var state = connection.state;
    var shown;
    if (state === 'authenticated') shown = 'authenticated';
    else if (state === 'open') shown = 'connected';
    else if (state === 'connecting' && !closedOnce) shown = 'connecting';
    else shown = 'reconnecting';
    var labels = {
      connecting: 'Connecting…',
      connected: 'Connected',
      authenticated: 'Authenticated',
      reconnecting: 'Reconnecting…',
    };
    ui.state.dataset.state = shown;
    ui.stateLabel.textContent = labels[shown];
    ui.state.title = shown === 'authenticated' && username ? 'Signed in over the socket as ' + username : '';
  }

  // --- Signing in -------------------------------------------------------

  document.querySelectorAll('.user-button').forEach(function (button) {
    button.addEventListener('click', function () { signIn(button.dataset.token); });
  });
  ui.tokenForm.addEventListener('submit', function (event) {
    event.preventDefault();
    signIn(ui.tokenInput.value.trim());
  });
  byTestId('signout').addEventListener('click', function () { signOut(); });

  // signIn checks the token with the API (which also lists the widgets),
  // then sets the authentication hook and subscribes to every widget.
  function signIn(candidate) {
    if (!candidate) return;
    showSigninError('');
    api('GET', '/api/widgets', null, candidate).then(function (list) {
      token = candidate;
      sessionStorage.setItem(TOKEN_KEY, token);
      var me = document.querySelector('.user-button[data-token="' + cssEscape(token) + '"] .user-name');
      showAccount(me ? me.textContent.replace(/^Sign in as /, '') : 'Signed in');
      // The hook first: with it set, subscriptions wait for isAuthenticated().
      connection.authentication(authenticate);
      showWidgets(list);
    }).catch(function (error) {
      if (error.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        showSigninError('That session token is not valid. Pick one of the demo users above.');
      } else {
        showSigninError('Could not load the widgets: ' + error.message);
      }
    });
  }

  // Signing out starts afresh: a new page, a new anonymous session.
  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (message) sessionStorage.setItem('myxi-demo-message', message);
    location.reload();
  }

  function showSigninError(message) {
    ui.signinError.textContent = message;
    ui.signinError.hidden = !message;
  }

  function showAccount(name) {
    ui.account.hidden = false;
    ui.accountName.textContent = name;
    ui.accountAvatar.textContent = name.charAt(0);
    ui.signin.hidden = true;
  }

  // --- Widgets ----------------------------------------------------------

  function showWidgets(list) {
    ui.widgets.hidden = false;
    ui.grid.textContent = '';
    list.forEach(function (view) {
      var w = { id: String(view.id), view: view, quantity: view.quantity, version: 0, status: 'pending' };
      w.card = renderCard(view);
      ui.grid.appendChild(w.card);
      widgets[w.id] = w;
      subscribe(w);
    });
  }

  // subscribe: one subscription per card, widgets/<id>. The server's
  // authorizer decides; a refusal arrives as SubscriptionDenied.
  //
  // The widgets exchange keeps a history: after a reconnect the client
  // subscribes again from the last event it saw, and the server replays
  // what this page missed (mq.replayed, recovered true), so nothing needs
  // reloading. The quantities are reloaded from the API when that is not
  // possible: RecoveryFailed (the history was lost, e.g. the server
  // restarted, or too much was missed), and after a Subscribed that did
  // not resume (recovered null): the first one, which may follow a change
  // made between the page's load and its subscription, and every one on an
  // exchange without history (the demo on a broker that keeps none).
  function subscribe(w) {
    var subscription = connection.subscribe('widgets', w.id);
    w.subscription = subscription;
    setStatus(w, connection.state === 'authenticated' ? 'subscribing' : 'pending');
    subscription.on('Subscribed', function () {
      setStatus(w, 'live');
      if (this.recovered === null) refreshQuantities('Subscribed');
    });
    subscription.on('RecoveryFailed', function () {
      logLocal('RecoveryFailed', 'widgets / ' + w.id + ': the missed events cannot be replayed; reloading the quantities.');
      refreshQuantities('RecoveryFailed');
    });
    subscription.on('SubscriptionDenied', function () { setStatus(w, 'denied'); });
    subscription.on('Error', function (payload) {
      if (payload.error !== 'SubscriptionDenied' && payload.error !== 'BrokerUnavailable') setStatus(w, 'error', payload.error);
    });
    subscription.on('Unsubscribed', function (payload) {
      if (payload.auto) setStatus(w, 'revoked');
    });
    // The event carries the new quantity, not a change to it: applying it
    // twice, or after a reload that already has it, changes nothing.
    subscription.on('WidgetQtyChanged', function (payload) {
      if (typeof payload.quantity !== 'number') return;
      w.version++;
      setQuantity(w, payload.quantity);
    });
  }

  // refreshQuantities reloads every quantity from the API (what the page
  // shows on sign-in). The Subscribed or RecoveryFailed of several widgets
  // arrive together: they share one request. Only a RecoveryFailed reload
  // is logged; the others are the routine of an exchange without history.
  var refreshTimer = null;
  var refreshReasons = [];
  function refreshQuantities(reason) {
    if (refreshReasons.indexOf(reason) < 0) refreshReasons.push(reason);
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(function () {
      var reasons = refreshReasons;
      refreshReasons = [];
      var versions = {};
      eachWidget(function (w) { versions[w.id] = w.version; });
      api('GET', '/api/widgets', null, token).then(function (list) {
        var shown = [];
        list.forEach(function (view) {
          var w = widgets[String(view.id)];
          if (!w || !view.visible) return;
          // An event that arrived meanwhile is newer than this answer.
          if (w.version === versions[w.id]) setQuantity(w, view.quantity);
          shown.push('#' + view.id + ' ' + w.quantity);
        });
        if (reasons.indexOf('RecoveryFailed') >= 0) logLocal('Reloaded', 'Quantities from /api/widgets: ' + shown.join(', ') + '.');
      }).catch(function (error) {
        logLocal('Reload failed', error.message);
      });
    }, 100);
  }

  function renderCard(view) {
    var card = ui.template.content.firstElementChild.cloneNode(true);
    var id = view.id;
    card.dataset.testid = 'widget-' + id;
    card.dataset.widgetId = id;
    var name = view.visible ? view.name : 'Widget #' + id;
    $('.widget-name', card).textContent = name;
    var badge = $('.badge', card);
    badge.textContent = view.visible ? (view.visibility === 'public' ? 'Public' : 'Private') : 'Locked';
    badge.dataset.kind = view.visible ? view.visibility : 'restricted';
    $('.widget-meta', card).textContent = view.visible ? '#' + id + ' · owned by ' + view.owner : '#' + id + ' · owner hidden';
    var qty = $('.qty', card);
    qty.dataset.testid = 'widget-' + id + '-qty';
    qty.textContent = view.visible ? String(view.quantity) : '—';
    var status = $('.widget-status', card);
    status.dataset.testid = 'widget-' + id + '-status';
    card.querySelectorAll('.qty-button').forEach(function (button) {
      var delta = Number(button.dataset.delta);
      button.dataset.testid = 'widget-' + id + (delta > 0 ? '-inc' : '-dec');
      button.setAttribute('aria-label', (delta > 0 ? 'Add one ' : 'Remove one ') + name);
      button.addEventListener('click', function () { changeQuantity(id, delta, button); });
    });
    return card;
  }

  var statusText = {
    pending: 'Waiting for the connection',
    subscribing: 'Checking access…',
    live: 'Live',
    offline: 'Offline, reconnecting…',
    denied: 'You may not see this widget',
    revoked: 'Access was withdrawn',
    error: 'Could not subscribe',
  };

  function setStatus(w, status, detail) {
    w.status = status;
    w.card.dataset.status = status;
    $('.status-text', w.card).textContent = statusText[status] + (detail ? ' (' + detail + ')' : '');
    // Offline, a change would be saved but its event would not reach this
    // page until it reconnects: the buttons wait for the socket too.
    var locked = status === 'denied' || status === 'revoked' || status === 'offline' || !w.view.visible;
    w.card.querySelectorAll('.qty-button').forEach(function (button) {
      button.disabled = locked || (button.dataset.delta < 0 && w.quantity === 0);
    });
    if (status === 'denied') $('.qty', w.card).textContent = '—';
  }

  function setQuantity(w, quantity) {
    if (w.quantity === quantity) return;
    w.quantity = quantity;
    var qty = $('.qty', w.card);
    qty.textContent = String(quantity);
    qty.classList.remove('flash');
    void qty.offsetWidth; // restart the animation
    qty.classList.add('flash');
    setStatus(w, w.status);
  }

  // changeQuantity goes through the HTTP API; the new quantity comes back
  // as a WidgetQtyChanged event, in this window and every other one.
  function changeQuantity(id, delta, button) {
    button.disabled = true;
    showWidgetsError('');
    api('POST', '/api/widgets/' + id, { delta: delta }, token).catch(function (error) {
      showWidgetsError('Could not change widget #' + id + ': ' + error.message);
    }).then(function () {
      var w = widgets[String(id)];
      if (w) setStatus(w, w.status);
    });
  }

  function showWidgetsError(message) {
    ui.widgetsError.textContent = message;
    ui.widgetsError.hidden = !message;
  }

  function eachWidget(fn) {
    Object.keys(widgets).forEach(function (id) { fn(widgets[id]); });
  }

  // --- SayHello ---------------------------------------------------------

  ui.hello.addEventListener('click', function () {
    var started = performance.now();
    ui.hello.disabled = true;
    connection.request('SayHello', {}).then(function (event) {
      var ms = Math.round(performance.now() - started);
      var time = new Date(event.payload.time);
      ui.helloReply.dataset.time = event.payload.time;
      ui.helloReply.dataset.answered = 'yes';
      ui.helloReply.textContent = 'HelloThere! The server’s clock reads ' +
        time.toLocaleTimeString() + ' (' + ms + ' ms round trip).';
    }).catch(function (error) {
      ui.helloReply.textContent = 'No answer: ' + (error.error || error.message) + '.';
    }).then(function () {
      ui.hello.disabled = false;
    });
  });

  // --- Event log --------------------------------------------------------

  function logEvent(event) {
    var where = event.mq ? event.mq.e + ' / ' + event.mq.rk : '';
    if (event.event === 'Error' && event.payload && event.payload.error) where = String(event.payload.error);
    // The client flags an event replayed from the history after a reconnect.
    var replayed = !!(event.mq && event.mq.replayed);
    addLogEntry(event.event, where, JSON.stringify(event.payload), 'server', replayed);
  }

  function logLocal(name, detail) {
    addLogEntry(name, '', detail, 'local');
  }

  function addLogEntry(name, where, detail, kind, replayed) {
    var item = document.createElement('li');
    item.dataset.event = name;
    item.dataset.kind = kind;
    if (replayed) item.dataset.replayed = 'true';
    var time = document.createElement('time');
    time.textContent = new Date().toLocaleTimeString();
    var title = document.createElement('strong');
    title.textContent = name;
    item.append(time, ' ', title);
    if (where) {
      var w = document.createElement('span');
      w.className = 'log-where';
      w.textContent = where;
      item.append(' ', w);
    }
    if (replayed) {
      var tag = document.createElement('span');
      tag.className = 'log-tag';
      tag.textContent = 'replayed';
      tag.title = 'Missed while offline, replayed from the history after the reconnect';
      item.append(' ', tag);
    }
    if (detail) {
      var code = document.createElement('code');
      code.textContent = detail;
      item.append(code);
    }
    ui.log.prepend(item);
    while (ui.log.children.length > LOG_LIMIT) ui.log.lastElementChild.remove();
  }

  byTestId('clear-log').addEventListener('click', function () { ui.log.textContent = ''; });

  // --- HTTP API ---------------------------------------------------------

  function api(method, path, body, bearer) {
    var headers = { Authorization: 'Bearer ' + bearer };
    if (body) headers['Content-Type'] = 'application/json';
    return fetch(path, { method: method, headers: headers, body: body ? JSON.stringify(body) : undefined })
      .then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (data) {
          if (response.ok) return data;
          var error = new Error(data.message || response.statusText);
          error.status = response.status;
          throw error;
        });
      });
  }

  function cssEscape(value) {
    return window.CSS && CSS.escape ? CSS.escape(value) : value.replace(/["\\]/g, '\\$&');
  }

  // --- Start ------------------------------------------------------------

  var message = sessionStorage.getItem('myxi-demo-message');
  if (message) {
    sessionStorage.removeItem('myxi-demo-message');
    showSigninError(message);
  }
  if (token) signIn(token);
  renderState();
})();
