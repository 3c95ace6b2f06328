// Analytics Desk tracker, served by GET /script.js (src-tauri/src/http/routes/tracker.rs):
//   <script defer src="http://localhost:1000/script.js" data-site="site-001"></script>
// Opt-in extensions are scripts of their own, included after this one
// (tracker.outbound.js, tracker.file-downloads.js, tracker.404.js).
// The server drops these comment lines and the indentation; what remains must
// stay under 1024 bytes gzipped (a test checks), hence the terse style and short names:
// w window, n navigator, l location, h history, s this <script> element,
// a(name) its data-name attribute, u the /event URL, off: send nothing.
(function(w,n,l,h){
var s=document.currentScript,a=function(k){return s&&s.getAttribute('data-'+k)},site=a('site'),last,ref=document.referrer;
// The API is where this script came from, unless data-api says otherwise.
var u=site&&(a('api')||new URL(s.src).origin).replace(/\/$/,'')+'/event';
// Send nothing without data-site; nor from a local page unless data-include-localhost;
// nor, with data-respect-dnt, when the browser asks not to be tracked.
var off=!site||/^(localhost|127\.0\.0\.1|\[::1\])$/.test(l.hostname)&&a('include-localhost')==null||
  a('respect-dnt')!=null&&(n.doNotTrack=='1'||n.globalPrivacyControl);
// Nor from a browser excluded on this site (see /exclude-me); reading storage may throw.
try{off=off||localStorage.analytics_desk_ignore=='true'}catch(e){}
// analytics.track(name, {props: {plan: 'pro'}, path: '/other'}): both optional.
function track(type,o){
  if(off)return;
  o=o||{};
  // No user_id: the server derives an anonymous one (no cookie). A random
  // event_id (128 bits) makes any resend of this body count once. The server
  // reads the hostname and UTM parameters from url; referrer only comes with
  // the load's first page view (r).
  var b={site_id:site,event_type:type,path:o.path||l.pathname,url:l.href,referrer:o.r||void 0,
  screen_width:screen.width,event_id:crypto.getRandomValues(new Uint32Array(4)).join('-')},
  k=o.props&&Object.keys(o.props).slice(0,30);
  // At most 30 props, as strings; more keys are dropped here.
  if(k&&k.length){b.props={};k.forEach(function(p){b.props[p]=String(o.props[p])})}
  var body=JSON.stringify(b);
  // Both send a string as text/plain (no CORS preflight) and outlive the page.
  if(!(n.sendBeacon&&n.sendBeacon(u,body)))fetch(u,{method:'POST',body:body,keepalive:true}).catch(function(){});
}
// One page_view per path in a row: routers also call replaceState without navigating.
// The referrer is the load's: only its first page view sends it.
function view(){if(l.pathname!=last){last=l.pathname;track('page_view',{r:ref});ref=''}}
// Single-page apps change the path through the History API, without a page load.
['pushState','replaceState'].forEach(function(m){
  var f=h[m];
  h[m]=function(){var r=f.apply(this,arguments);view();return r};
});
w.addEventListener('popstate',view);
w.analytics={track:track};
view();
})(window,navigator,location,history);
