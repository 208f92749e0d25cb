'use strict';
'require view';
'require form';

/*
 * masq settings: /etc/config/masq through LuCI's UCI forms. Only the options people
 * change from the web are here; docs/CONFIG.md has all of them, and `masq check-config`
 * says which line is wrong when the daemon refuses a file. Save & Apply reloads masq
 * (SIGHUP) through the init script's reload trigger.
 */

var DETECTOR = /^(always|(file|pipe|iface|ubus|modem):.+)$/;

function validateDetector(section_id, value) {
	if (value == null || value === '' || DETECTOR.test(value))
		return true;
	return _('Expecting always, file:PATH, pipe:COMMAND, iface:NAME, ubus:IFACE or modem:DEVICE');
}

function validateListener(section_id, value) {
	if (value == null || value === '' || /^(smtp|submission|smtps|qmtp):\/\/\S+$/.test(value))
		return true;
	return _('Expecting SCHEME://ADDRESS[:PORT], scheme smtp, submission, smtps or qmtp');
}

// A domain or a glob pattern (docs/CONFIG.md, "Patterns"): `*.sub.example`, `mail?.lan`,
// `[192.0.2.1]`; `masq check-config` has the last word.
var DOMAIN_PATTERN = /^(\[[0-9A-Fa-f.:v]+\]|[A-Za-z0-9*?\[\]!^-][A-Za-z0-9.*?\[\]!^-]*)$/;

function validateDomainPattern(section_id, value) {
	if (value == null || value === '' || DOMAIN_PATTERN.test(value))
		return true;
	return _('Expecting a domain or a pattern such as *.example.org');
}

function validateMailbox(section_id, value) {
	if (value == null || value === '' || /^(maildir|mbox|mda):.+$/.test(value))
		return true;
	return _('Expecting maildir:PATH, mbox:PATH or mda:COMMAND');
}

function mainSection(m) {
	var s, o;

	s = m.section(form.TypedSection, 'masq', _('General'));
	s.anonymous = true;
	s.addremove = false;

	s.tab('general', _('General'));
	s.tab('storage', _('Storage'));

	o = s.taboption('general', form.Value, 'hostname', _('Host name'),
		_('Our name in HELO and Received: lines. Empty: the system host name.'));
	o.datatype = 'hostname';
	o.optional = true;

	o = s.taboption('general', form.DynamicList, 'listen', _('Listeners'),
		_('Where to accept SMTP, e.g. smtp://127.0.0.1:25 or smtp://192.168.1.1:25. Empty: loopback only.'));
	o.validate = validateListener;

	o = s.taboption('general', form.DynamicList, 'relay_net', _('Networks that may relay'),
		_('Clients in these networks may send mail to any domain, e.g. 192.168.1.0/24.'));
	o.datatype = 'cidr';

	o = s.taboption('general', form.DynamicList, 'local_domain', _('Local domains'),
		_('Mail for these domains is delivered on this device.'));
	o.validate = validateDomainPattern;

	o = s.taboption('general', form.Value, 'mailbox', _('Mailbox'),
		_('Local delivery: maildir:PATH, mbox:PATH or mda:COMMAND; %u is the user.'));
	o.placeholder = 'mbox:/var/mail/%u';
	o.validate = validateMailbox;

	o = s.taboption('storage', form.Value, 'spool_dir', _('Spool directory'),
		_('/var is RAM on OpenWrt: queued mail there is lost at power-off. /usr/var/spool/masq is on flash.'));
	o.placeholder = '/usr/var/spool/masq';

	o = s.taboption('storage', form.Flag, 'volatile_spool', _('Spool in RAM'),
		_('Allow a spool on tmpfs and accept that queued mail dies with the power.'));

	o = s.taboption('storage', form.Value, 'max_message_size', _('Largest message'),
		_('Bytes, or a number with k, M or G.'));
	o.placeholder = '10M';

	o = s.taboption('storage', form.Value, 'status_listen', _('Status page'),
		_('HOST:PORT of the JSON status page, e.g. 127.0.0.1:8025. Empty: off.'));
	o.datatype = 'ipaddrport(1)';
	o.optional = true;
}

function routeSection(m) {
	var s, o;

	s = m.section(form.GridSection, 'route', _('Routes'),
		_('Routes are tried in order; each recipient leaves by the first online route that accepts it.'));
	s.addremove = true;
	s.anonymous = false;
	s.sortable = true;
	s.nodescriptions = true;

	o = s.option(form.Value, 'online', _('Online when'),
		_('always, file:PATH, pipe:COMMAND, iface:DEVICE (e.g. iface:ppp-wan), ubus:INTERFACE (e.g. ubus:wan) or modem:DEVICE'));
	o.value('always', _('always'));
	o.value('ubus:wan', 'ubus:wan');
	o.value('ubus:wwan', 'ubus:wwan');
	o.value('iface:ppp-wan', 'iface:ppp-wan');
	o.value('iface:3g-wan', 'iface:3g-wan');
	o.placeholder = 'always';
	o.validate = validateDetector;

	o = s.option(form.Value, 'smarthost', _('Smarthost'),
		_('HOST[:PORT] to relay all mail through. Empty: deliver to the recipients\' MX hosts.'));
	o.datatype = 'or(host,hostport)';
	o.optional = true;

	o = s.option(form.ListValue, 'tls', _('TLS'));
	o.value('opportunistic', _('STARTTLS when offered'));
	o.value('starttls', _('STARTTLS required'));
	o.value('tls', _('TLS from the start (port 465)'));
	o.value('none', _('none'));
	o.default = 'opportunistic';

	o = s.option(form.Flag, 'tls_verify', _('Verify certificate'));
	o.default = '1';
	o.modalonly = true;

	o = s.option(form.Value, 'auth_user', _('AUTH user'));
	o.optional = true;
	o.modalonly = true;

	o = s.option(form.Value, 'auth_pass', _('AUTH password'));
	o.password = true;
	o.optional = true;
	o.modalonly = true;
	o.depends({ auth_user: '', '!reverse': true });

	o = s.option(form.Value, 'from_domain', _('Sender domain'),
		_('Rewrite local and unqualified sender addresses to this domain on this route.'));
	o.datatype = 'hostname';
	o.optional = true;
	o.modalonly = true;

	o = s.option(form.DynamicList, 'allowed_recipient', _('Only recipients'),
		_('Patterns such as *@example.com. Empty: every recipient.'));
	o.modalonly = true;
}

function userSection(m) {
	var s, o;

	s = m.section(form.TableSection, 'user', _('Users'),
		_('Accounts for SMTP AUTH from mail programs. Store a hash made with `masq passwd USER`; a plain-text password works but masq warns about it.'));
	s.addremove = true;
	s.anonymous = false;

	o = s.option(form.Value, 'password', _('Password (hash)'));
	o.password = true;
	o.rmempty = false;

	o = s.option(form.Value, 'mailbox', _('Mailbox'));
	o.placeholder = _('as in General');
	o.optional = true;
	o.validate = validateMailbox;
}

return view.extend({
	render: function() {
		var m = new form.Map('masq', _('Mail (masq)'),
			_('masq queues mail until a route is online, then delivers it. Every option is described in docs/CONFIG.md.'));

		mainSection(m);
		routeSection(m);
		userSection(m);

		return m.render();
	}
});
