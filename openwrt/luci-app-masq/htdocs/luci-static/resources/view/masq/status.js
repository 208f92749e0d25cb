'use strict';
'require view';
'require rpc';
'require poll';
'require dom';
'require ui';

/*
 * masq status: routes (online state, detector, last error), the queue and the counters,
 * refreshed every five seconds from the luci.masq rpcd plugin, which only reads the
 * status file the daemon keeps in /var/run/masq. "Send now" starts `masq flush [ROUTE]`.
 */

var callStatus = rpc.declare({
	object: 'luci.masq',
	method: 'status',
	expect: { '': {} }
});

var callFlush = rpc.declare({
	object: 'luci.masq',
	method: 'flush',
	params: [ 'route' ],
	expect: { '': {} }
});

function fmtTime(ts) {
	if (ts == null)
		return '-';
	return new Date(ts * 1000).toLocaleString();
}

function fmtText(value) {
	return (value == null || value === '') ? '-' : String(value);
}

/* Offline is the normal state of a dial-up route: a neutral label, not a warning. */
function badge(ok, yes, no) {
	return E('span', { 'class': 'label' + (ok ? ' success' : '') }, [ ok ? yes : no ]);
}

function routeState(r) {
	var labels = [ badge(r.online, _('online'), _('offline')) ];
	if (r.override === 'up')
		labels.push(' ', E('span', { 'class': 'label notice' }, [ _('forced up') ]));
	else if (r.override === 'down')
		labels.push(' ', E('span', { 'class': 'label notice' }, [ _('forced down') ]));
	return E('span', {}, labels);
}

/* What a queued recipient waits for (status.json's `waiting`, masq/outbound/waits_for.py). */
function waiting(w) {
	if (!w)
		return '';
	switch (w.reason) {
	case 'retry':
		return w.route ? _('retry at %s via %s').format(fmtTime(w.until), w.route)
			: _('retry at %s').format(fmtTime(w.until));
	case 'offline':
		return _('waits for route %s (offline)').format(w.route);
	case 'no_route':
		return _('no route takes it: stays queued');
	case 'local':
		return _('local delivery, due now');
	case 'no_daemon':
		return _('no daemon runs: leaves with the next queue run');
	default:
		return w.route ? _('due now via %s').format(w.route) : _('due now');
	}
}

function table(titles, rows, empty) {
	var head = E('tr', { 'class': 'tr table-titles' }, titles.map(function(title) {
		return E('th', { 'class': 'th' }, [ title ]);
	}));
	var body = rows.map(function(cells) {
		return E('tr', { 'class': 'tr' }, cells.map(function(cell) {
			return E('td', { 'class': 'td' }, [ cell ]);
		}));
	});

	if (!body.length)
		body = [ E('tr', { 'class': 'tr placeholder' }, [
			E('td', { 'class': 'td', 'colspan': titles.length }, [ E('em', {}, [ empty ]) ])
		]) ];

	return E('table', { 'class': 'table' }, [ head ].concat(body));
}

return view.extend({
	load: function() {
		return L.resolveDefault(callStatus(), { error: _('No answer from rpcd (luci.masq)') });
	},

	/* ui.createHandlerFn greys the button out until the returned promise settles. */
	handleFlush: function(route, ev) {
		return L.resolveDefault(callFlush(route || ''), { error: _('No answer from rpcd') })
			.then(function(res) {
				if (res.error)
					ui.addNotification(null, E('p', {}, [ _('Send now failed: %s').format(res.error) ]), 'danger');
				else
					ui.addNotification(null, E('p', {}, [ route
						? _('Delivering the mail queued for route %s.').format(route)
						: _('Delivering all queued mail.') ]), 'info');
			});
	},

	renderRoutes: function(routes) {
		var self = this;

		return table([ _('Route'), _('Online'), _('Detector'), _('Since'), _('Last error'), '' ],
			routes.map(function(r) {
				return [
					E('strong', {}, [ r.name ]),
					routeState(r),
					E('code', {}, [ fmtText(r.detector) ]),
					fmtTime(r.since),
					fmtText(r.last_error),
					E('button', {
						'class': 'cbi-button cbi-button-action',
						'click': ui.createHandlerFn(self, 'handleFlush', r.name)
					}, [ _('Send now') ])
				];
			}), _('No routes configured: mail for other hosts stays queued.'));
	},

	renderQueue: function(queue) {
		return table([ _('Message'), _('Sender'), _('Recipients'), _('Size'), _('Received') ],
			queue.map(function(m) {
				return [
					E('code', {}, [ m.id ]),
					fmtText(m.sender || '<>'),
					E('div', {}, (m.recipients || []).map(function(r) {
						return E('div', { 'title': fmtText(r.last_error) }, [
							r.address, ' ',
							E('span', { 'class': 'label' }, [ r.state ]),
							r.waiting ? E('div', { 'class': 'cbi-value-description' }, [ waiting(r.waiting) ])
								: (r.next_attempt ? ' ' + _('next try %s').format(fmtTime(r.next_attempt)) : '')
						]);
					})),
					'%1024.1mB'.format(m.size || 0),
					fmtTime(m.received)
				];
			}), _('The queue is empty.'));
	},

	renderCounters: function(counters) {
		var names = [
			[ 'accepted', _('Accepted') ], [ 'delivered', _('Delivered') ],
			[ 'deferred', _('Deferred') ], [ 'bounced', _('Bounced') ]
		];

		return E('table', { 'class': 'table' }, names.map(function(n) {
			return E('tr', { 'class': 'tr' }, [
				E('td', { 'class': 'td left', 'width': '33%' }, [ n[1] ]),
				E('td', { 'class': 'td left' }, [ String(counters[n[0]] || 0) ])
			]);
		}));
	},

	renderBody: function(st) {
		if (!st || st.error)
			return E('div', { 'class': 'alert-message warning' }, [
				E('p', {}, [ _('masq status is not available: %s').format(st ? st.error : _('no data')) ]),
				E('p', {}, [ _('Start the service with /etc/init.d/masq start.') ])
			]);

		return E('div', {}, [
			E('div', { 'class': 'cbi-section' }, [
				E('h3', {}, [ _('Routes') ]),
				this.renderRoutes(st.routes || [])
			]),
			E('div', { 'class': 'cbi-section' }, [
				E('h3', {}, [ _('Queue') ]),
				this.renderQueue(st.queue || [])
			]),
			E('div', { 'class': 'cbi-section' }, [
				E('h3', {}, [ _('Counters since start') ]),
				this.renderCounters(st.counters || {}),
				E('p', {}, [ _('Host %s, masq %s, up %s.').format(
					fmtText(st.hostname), fmtText(st.masq),
					st.uptime != null ? '%t'.format(st.uptime) : '-') ])
			])
		]);
	},

	render: function(st) {
		var self = this;
		var body = E('div', { 'id': 'masq-status' }, [ this.renderBody(st) ]);

		poll.add(function() {
			return L.resolveDefault(callStatus(), { error: _('No answer from rpcd (luci.masq)') })
				.then(function(next) { dom.content(body, self.renderBody(next)); });
		}, 5);

		return E('div', { 'class': 'cbi-map' }, [
			E('h2', {}, [ _('Mail (masq)') ]),
			E('div', { 'class': 'cbi-map-descr' }, [
				_('Mail waits in the queue until a route is online. Send now delivers what can go at once.')
			]),
			E('div', { 'class': 'right' }, [
				E('button', {
					'class': 'cbi-button cbi-button-action important',
					'click': ui.createHandlerFn(this, 'handleFlush', null)
				}, [ _('Send now (all routes)') ])
			]),
			body
		]);
	},

	handleSave: null,
	handleSaveApply: null,
	handleReset: null
});
