// Analytics Desk tracker, served by GET /script.js (src-tauri/src/tracker.rs):
//   <script defer src="http://localhost:1000/script.js" data-site="site-001"></script>
// The server drops these comment lines and the indentation; what remains must
// stay under 1024 bytes (a test checks), hence the terse style and short names:
// w window, n navigator, l location, h history, s this <script> element,
// a(name) its data-name attribute, u the /event URL, off: send nothing.
(function(w,n,l,h){
var s=document.currentScript,a=function(k){return s&&s.getAttribute('data-'+k)},site=a('site'),last;
// The API is where this script came from, unless data-api says otherwise.
var u=site&&(a('api')||new URL(s.src).origin).replace(/\/$/,'')+'/event';
// Send nothing without data-site; nor from a local page unless data-include-localhost;
// nor, with data-respect-dnt, when the browser asks not to be tracked.
var off=!site||/^(localhost|127\.0\.0\.1|\[::1\])$/.test(l.hostname)&&a('include-localhost')==null||
  a('respect-dnt')!=null&&(n.doNotTrack=='1'||n.globalPrivacyControl);
function track(type,o){
  if(off)return;
  // No user_id: the server derives an anonymous one (no cookie). A random
  // event_id (128 bits) makes any resend of this body count once.
  var body=JSON.stringify({site_id:site,event_type:type,path:o&&o.path||l.pathname,
  event_id:crypto.getRandomValues(new Uint32Array(4)).join('-')});
  // Both send a string as text/plain (no CORS preflight) and outlive the page.
  if(!(n.sendBeacon&&n.sendBeacon(u,body)))fetch(u,{method:'POST',body:body,keepalive:true}).catch(function(){});
}
// One page_view per path in a row: routers also call replaceState without navigating.
function view(){if(l.pathname!=last){last=l.pathname;track('page_view')}}
// Single-page apps change the path through the History API, without a page load.
['pushState','replaceState'].forEach(function(m){
  var f=h[m];
  h[m]=function(){var r=f.apply(this,arguments);view();return r};
});
w.addEventListener('popstate',view);
w.analytics={track:track};
view();
})(window,navigator,location,history);
