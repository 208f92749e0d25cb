"""The status page's HTML, CSS and JavaScript, in the look of LuCI (luci-theme-bootstrap).

Owns the markup and the browser side: one self-contained page (no external resource, no
font, no image; well under 30 KB) that fetches /status.json every few seconds and redraws
its tables in place (no reload; it pauses while the tab is hidden), and posts the buttons
("send now" and up/down/auto per route, "retry" and "delete" per message) with the CSRF token it was given
in a <meta> tag. Every text from the queue (addresses, errors, log lines) is hostile: the
script inserts it with textContent only, never as markup.

The inline script and style are constants: CSP allows exactly them by their SHA-256
(`CSP`), so an injected script or style could not run. Does not: decide who may see the
page or answer requests (masq.status.web does).
"""

import base64
import hashlib

STYLE = """
:root{--primary:#1976d2;--error:#e8210d;--success:#009a4c;--warn:#efbd0b;--text:#404040;
--bg:#fff;--border:#ddd;--shade:#f9f9f9;--muted:#777}
@media (prefers-color-scheme:dark){:root{--text:#ddd;--bg:#222;--border:#444;--shade:#2a2a2a;
--muted:#aaa}}
*{box-sizing:border-box}
body{margin:0;padding:0 0 5px;font-family:"Helvetica Neue",Helvetica,Arial,sans-serif;
font-size:13px;line-height:18px;color:var(--text);background:var(--bg)}
header{background:#222;background-image:linear-gradient(#333,#222);color:#bfbfbf;
box-shadow:0 1px 3px rgba(0,0,0,.25);margin-bottom:18px}
header .container{display:flex;align-items:center;flex-wrap:wrap;gap:0 20px;min-height:40px}
header .brand{color:#fff;font-size:20px;font-weight:200;text-decoration:none;line-height:40px}
header .right{margin-left:auto}
.container{max-width:940px;margin:0 auto;padding:0 10px}
@media (min-width:1200px){.container{max-width:1170px}}
h2{font-size:24px;line-height:36px;margin:0 0 9px}
h3{font-size:18px;line-height:36px;margin:0 0 9px;font-weight:bold}
.cbi-section{margin-bottom:18px;overflow-x:auto}
.table{display:table;width:100%;border-collapse:collapse;font-size:13px;margin-bottom:18px}
.tr{display:table-row}
.td,.th{display:table-cell;padding:10px 10px 9px;border-top:1px solid var(--border);
text-align:left;vertical-align:top;overflow-wrap:break-word}
.th{font-weight:bold;white-space:nowrap}
.tr.table-titles,.cbi-rowstyle-2{background:var(--shade)}
.cbi-section-table .tr:hover{background:rgba(25,118,210,.06)}
.tr.table-titles:hover{background:var(--shade)}
.right{text-align:right}.nowrap{white-space:nowrap}
.muted{color:var(--muted)}.small{font-size:11px;line-height:14px}
.cbi-button{display:inline-block;font:inherit;padding:0 14px;line-height:2em;
border-radius:4px;border:1px solid var(--border);background:var(--bg);color:var(--text);
cursor:pointer;margin:1px 2px;white-space:nowrap}
.cbi-button:disabled{opacity:.5;cursor:default}
select.cbi-input-select{font:inherit;line-height:2em;height:2.2em;border-radius:4px;
border:1px solid var(--border);background:var(--bg);color:var(--text);margin:1px 2px}
.cbi-button-action{color:var(--primary);border-color:var(--primary)}
.cbi-button-positive{color:var(--success);border-color:var(--success)}
.cbi-button-negative{color:var(--error);border-color:var(--error)}
.cbi-button-action.important{background:var(--primary);color:#fff}
.label{display:inline-block;padding:1px 4px 2px;font-size:9.75px;font-weight:bold;
line-height:14px;color:#fff;text-transform:uppercase;white-space:nowrap;
background:#bfbfbf;border-radius:3px;margin:1px 2px 1px 0}
.label.success{background:var(--success)}.label.warning{background:var(--warn)}
.label.important{background:var(--error)}.label.notice{background:var(--primary)}
.alert-message{padding:7px 15px;margin-bottom:18px;border:1px solid;border-radius:4px;
color:#404040}
.alert-message.warning{background:#fceec1;border-color:var(--warn)}
.alert-message.error{background:#fddfde;border-color:var(--error)}
.alert-message.success{background:#d1eed1;border-color:var(--success)}
.hidden{display:none}
pre{font-size:11px;line-height:15px;white-space:pre-wrap;word-break:break-all;
background:var(--shade);border:1px solid var(--border);border-radius:4px;padding:8px;margin:0}
footer{border-top:1px solid var(--border);color:var(--muted);font-size:11px;padding-top:8px}
@media (max-width:600px){
.table,.tr,.td{display:block;width:100%}
.tr.table-titles{display:none}
.tr{border-top:1px solid var(--border);padding:4px 0}
.td{border:0;padding:3px 10px}
.td[data-title]:not([data-title=""]){display:grid;grid-template-columns:92px minmax(0,1fr);
column-gap:6px;align-items:start}
.td[data-title]:not([data-title=""]):before{content:attr(data-title);font-weight:bold;
font-size:13px;line-height:18px;white-space:nowrap}
.right{text-align:left}
header .right{margin-left:0}}
"""

SCRIPT = r"""
(function(){
'use strict';
var token=document.querySelector('meta[name=csrf]').content, skew=0, last=0, timer=null;
function $(id){return document.getElementById(id)}
function el(tag,cls,text){var e=document.createElement(tag);if(cls)e.className=cls;
 if(text!==undefined&&text!==null)e.textContent=String(text);return e}
function cell(title,content,cls){var c=el('td','td'+(cls?' '+cls:''));
 c.setAttribute('data-title',title);
 if(content instanceof Node)c.appendChild(content);else if(content!==undefined&&content!==null)c.textContent=String(content);
 return c}
function titles(names){var r=el('tr','tr table-titles');
 names.forEach(function(n){r.appendChild(el('th','th',n))});return r}
function empty(cls,text,n){var r=el('tr',cls),c=cell('',text,'muted');c.colSpan=n;
 r.appendChild(c);return r}
function now(){return Date.now()/1000+skew}
function span(s){s=Math.max(0,Math.round(s));
 if(s<60)return s+'s';if(s<3600)return Math.floor(s/60)+'m '+(s%60)+'s';
 if(s<86400)return Math.floor(s/3600)+'h '+Math.floor(s%3600/60)+'m';
 return Math.floor(s/86400)+'d '+Math.floor(s%86400/3600)+'h'}
function size(n){return n<1024?n+' B':n<1048576?(n/1024).toFixed(1)+' KB':(n/1048576).toFixed(1)+' MB'}
function label(text,cls){return el('span','label '+cls,text)}
function button(text,cls,path,params,ask){var b=el('button','cbi-button '+cls,text);b.type='button';
 Object.keys(params).forEach(function(k){b.setAttribute('data-'+k,params[k])});
 b.onclick=function(){if(ask&&!window.confirm(ask))return;post(path,params,b)};return b}
function notice(text,cls){var n=$('notice');n.textContent=text;
 n.className='alert-message '+cls;clearTimeout(notice.t);
 notice.t=setTimeout(function(){n.className='hidden'},8000)}
function post(path,params,b,what){var body=new URLSearchParams(params);body.set('csrf',token);
 b.disabled=true;what=what||b.textContent;
 fetch(path,{method:'POST',body:body,credentials:'same-origin'}).then(function(r){
  return r.json().then(function(j){
   if(!j.ok)notice(j.error||(j.errors||[]).join('; ')||('HTTP '+r.status),'error');
   else if(j.started)notice(what+': started','success');
   else if(j.attempted===0)notice(what+': nothing could be sent now (no route online for it?)','warning');
   else if(j.attempted)notice(what+': '+j.delivered+' delivered, '+j.deferred+' deferred, '+j.bounced+' bounced','success');
   else if(j.route)notice('route '+j.route.name+' is now '+(j.route.online?'online':'offline'),'success');
   else notice(what+': done','success')})
 }).catch(function(e){notice(what+' failed: '+e,'error')}).then(function(){
  b.disabled=false;refresh()})}
var STATE={queued:'notice',deferred:'warning',delivered:'success',bounced:'important'};
function routes(list){var t=$('routes');t.textContent='';
 t.appendChild(titles(['Route','Detector','State','Since','Last error','']));
 list.forEach(function(r,i){var row=el('tr','tr'+(i%2?' cbi-rowstyle-2':''));
  row.setAttribute('data-route',r.name);
  row.appendChild(cell('Route',r.name));
  row.appendChild(cell('Detector',r.detector,'small'));
  var st=el('div');st.appendChild(r.online?label('online','success'):label('offline',''));
  if(r.override)st.appendChild(label('forced '+r.override,'notice'));
  row.appendChild(cell('State',st,'nowrap'));
  row.appendChild(cell('Since',r.since?span(now()-r.since)+' ago':'-','nowrap'));
  row.appendChild(cell('Last error',r.last_error||'-','small'));
  var act=el('div');act.appendChild(button('send now','cbi-button-action','/flush',{route:r.name}));
  act.appendChild(mode(r));row.appendChild(cell('',act,'right nowrap'));
  t.appendChild(row)});
 if(!list.length)t.appendChild(empty('tr','No route configured: mail for other domains stays queued.',6))}
function mode(r){var s=el('select','cbi-input-select');s.setAttribute('data-route',r.name);
 s.title='set the route up or down by hand, or let its detector decide (auto)';
 [['auto','auto (detector)'],['up','forced up'],['down','forced down']].forEach(function(o){
  var op=el('option',null,o[1]);op.value=o[0];s.appendChild(op)});
 s.value=r.override||'auto';
 s.onchange=function(){post('/online',{route:r.name,how:s.value},s,'route '+r.name+' '+s.value)};
 return s}
function sources(list){var t=$('fetch');t.textContent='';
 t.appendChild(titles(['Fetch','Server','Route','Last run','Taken','Last error']));
 list.forEach(function(f,i){var row=el('tr','tr'+(i%2?' cbi-rowstyle-2':''));
  row.setAttribute('data-fetch',f.name);
  row.appendChild(cell('Fetch',f.name));
  row.appendChild(cell('Server',f.protocol+' '+f.server,'small'));
  row.appendChild(cell('Route',f.route));
  row.appendChild(cell('Last run',f.running?label('running','notice'):f.last_run?span(now()-f.last_run)+' ago':'never','nowrap'));
  row.appendChild(cell('Taken',String(f.taken)));
  row.appendChild(cell('Last error',f.last_error||'-','small'));t.appendChild(row)});
 $('fbox').className=list.length?'cbi-section':'hidden'}
function recipients(m){var box=el('div');
 m.recipients.forEach(function(r){var line=el('div');
  line.appendChild(label(r.state,STATE[r.state]||''));line.appendChild(document.createTextNode(' '+r.address));
  var w=why(r.waiting);if(w)line.appendChild(el('div','small muted',w));
  box.appendChild(line)});return box}
function hhmm(t){var d=new Date((t-skew)*1000);
 return ('0'+d.getHours()).slice(-2)+':'+('0'+d.getMinutes()).slice(-2)}
function why(w){if(!w)return '';var via=w.route?' via '+w.route:'';
 switch(w.reason){case 'retry':return 'retry at '+hhmm(w.until)+via;
 case 'offline':return 'waits for route '+w.route+' (offline)';
 case 'no_route':return 'no route takes it: stays queued';
 case 'local':return 'local delivery, due now';
 case 'no_daemon':return 'no daemon runs: leaves'+via+' with the next queue run';
 default:return 'due now'+via}}
function tries(m){var a=0,next=null,err=null;
 m.recipients.forEach(function(r){a=Math.max(a,r.attempts||0);
  if(r.next_attempt&&(next===null||r.next_attempt<next))next=r.next_attempt;
  if(r.last_error)err=r.last_error});
 var box=el('div',null,a+(a===1?' try':' tries'));
 if(next)box.appendChild(el('div','muted nowrap','next '+(next>now()?'in '+span(next-now()):'now')));
 if(err)box.appendChild(el('div','small',err));return box}
function queue(list){var t=$('queue');t.textContent='';$('count').textContent=list.length;
 t.appendChild(titles(['Message','From','To','Size','Age','Tries','']));
 list.forEach(function(m,i){var row=el('tr','tr msg'+(i%2?' cbi-rowstyle-2':''));
  row.setAttribute('data-id',m.id);
  var id=el('div','small nowrap',m.id);if(m.quarantined){id.appendChild(label('quarantined','important'));id.appendChild(el('div','small',(m.quarantined.filter?m.quarantined.filter+': ':'')+m.quarantined.reason))}
  row.appendChild(cell('Message',id));
  row.appendChild(cell('From',m.sender||'<>'));
  row.appendChild(cell('To',recipients(m)));
  row.appendChild(cell('Size',size(m.size),'nowrap'));
  row.appendChild(cell('Age',span(m.age),'nowrap'));
  row.appendChild(cell('Tries',tries(m)));
  var act=el('div');act.appendChild(button('retry','cbi-button-positive','/retry',{id:m.id}));
  act.appendChild(button('delete','cbi-button-negative','/delete',{id:m.id},'Delete message '+m.id+'? It will not be delivered.'));
  row.appendChild(cell('',act,'right nowrap'));t.appendChild(row)});
 if(!list.length)t.appendChild(empty('tr empty','The queue is empty.',7))}
function counters(c){var t=$('counters');t.textContent='';var row=el('tr','tr');
 ['accepted','delivered','deferred','bounced'].forEach(function(k){row.appendChild(cell('',k+': '+(c[k]||0)))});
 t.appendChild(row)}
function render(d){$('host').textContent=d.hostname;
 $('version').textContent='masq '+(d.masq||'');
 $('uptime').textContent=d.uptime===null?'no daemon':'up '+span(d.uptime);
 routes(d.routes||[]);sources(d.fetch||[]);queue(d.queue||[]);counters(d.counters||{});
 var dl=(d.deliveries||[]).slice(-10).reverse(),dt=$('deliveries');dt.textContent='';
 dl.forEach(function(e){var row=el('tr','tr');
  row.appendChild(cell('Time',new Date(e.time*1000).toLocaleTimeString(),'nowrap'));
  row.appendChild(cell('Message',e.id));row.appendChild(cell('To',e.to));
  row.appendChild(cell('Status',e.status+' '+e.dsn));row.appendChild(cell('Relay',e.relay));
  row.appendChild(cell('Reply',e.text));dt.appendChild(row)});
 $('dbox').className=dl.length?'cbi-section':'hidden';
 var lines=(d.log||[]).slice(-15);$('log').textContent=lines.join('\n');
 $('logbox').className=lines.length?'cbi-section':'hidden';
 var online=(d.routes||[]).some(function(r){return r.online});
 $('nonline').className=(d.routes||[]).length&&!online&&(d.queue||[]).length?'alert-message warning':'hidden'}
function refresh(){clearTimeout(timer);
 fetch('/status.json',{cache:'no-store',credentials:'same-origin'}).then(function(r){
  if(r.status===401){location.reload();return null}
  if(!r.ok)throw new Error('HTTP '+r.status);
  var date=Date.parse(r.headers.get('Date')||'');if(date)skew=date/1000-Date.now()/1000;
  return r.json()}).then(function(d){if(!d)return;last=now();render(d);$('down').className='hidden'
 }).catch(function(e){$('down').className='alert-message warning';
  $('down').textContent='Cannot reach masq ('+e.message+')'+(last?': last update '+span(now()-last)+' ago':'')
 }).then(schedule)}
function schedule(){clearTimeout(timer);if(!document.hidden)timer=setTimeout(refresh,4000)}
document.addEventListener('visibilitychange',function(){if(!document.hidden)refresh()});
window.masqRefresh=refresh;
refresh();
})();
"""

_BODY = """</head>
<body>
<header><div class="fill"><div class="container"><a class="brand" href="/">masq</a>
<span id="host"></span><span class="right" id="uptime"></span></div></div></header>
<div class="container" id="maincontent">
<div id="notice" class="hidden" role="status"></div>
<div id="down" class="hidden" role="alert"></div>
<div id="nonline" class="hidden">No route is online: queued mail waits until one comes up
(or press <em>send now</em> to use a route anyway).</div>
<div class="cbi-map">
<div class="cbi-section"><h3>Routes</h3><table class="table cbi-section-table" id="routes"></table></div>
<div class="hidden" id="fbox"><h3>Fetching</h3>
<table class="table cbi-section-table" id="fetch"></table></div>
<div class="cbi-section"><h3>Queue (<span id="count">&hellip;</span>)</h3>
<table class="table cbi-section-table" id="queue"></table></div>
<div class="cbi-section"><h3>Counters</h3><table class="table" id="counters"></table></div>
<div class="hidden" id="dbox"><h3>Last deliveries</h3>
<table class="table cbi-section-table" id="deliveries"></table></div>
<div class="hidden" id="logbox"><h3>Log</h3><pre id="log"></pre></div>
</div>
<footer><span id="version">masq</span> &middot; refreshes every few seconds</footer>
</div>
"""


def _sha256(text):
    return "'sha256-%s'" % base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


CSP = ("default-src 'none'; script-src %s; style-src %s; connect-src 'self'; img-src data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
       % (_sha256(SCRIPT), _sha256(STYLE)))

_HEAD = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
         "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
         "<link rel=\"icon\" href=\"data:,\">\n<title>masq status</title>\n"
         "<style>" + STYLE + "</style>\n")

DENIED = (_HEAD + "</head>\n<body>\n<header><div class=\"container\"><a class=\"brand\" "
          "href=\"/\">masq</a></div></header>\n<div class=\"container\"><div class=\""
          "alert-message warning\">This page needs the status password (any user name). "
          "<a href=\"/\">Try again</a>.</div></div>\n</body>\n</html>\n")

_BEFORE_TOKEN = _HEAD + "<meta name=\"csrf\" content=\""
_AFTER_TOKEN = "\">\n" + _BODY + "<script>" + SCRIPT + "</script>\n</body>\n</html>\n"


def render(token):
    """Return the page with its CSRF token (hex: needs no escaping)."""
    if not token.isalnum():
        raise ValueError("the token must be alphanumeric")
    return _BEFORE_TOKEN + token + _AFTER_TOKEN
